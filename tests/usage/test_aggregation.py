"""Aggregation semantics (usage.aggregation), pure: every expectation below is computed by hand."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from usage.aggregation import (
    Event,
    Spec,
    aggregate,
    level_time,
    property_text,
    round_quantity,
    split_by_whole_hours,
    total,
    weighted_sum,
)

D = Decimal
MARCH = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))  # 31 days
FEBRUARY = (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))  # 29 days (leap year)


def at(day: int, hour: int = 0, month: int = 3, **kw) -> datetime:
    return datetime(2024, month, day, hour, tzinfo=UTC, **kw)


def ev(timestamp: datetime, value=None, event_id: int = 0, **properties) -> Event:
    return Event(
        timestamp=timestamp, value=None if value is None else D(str(value)), properties=properties, id=event_id
    )


# --- count -------------------------------------------------------------------------------------------------


def test_count_includes_the_start_instant_and_excludes_the_end_instant():
    events = [
        ev(at(1)),  # exactly the start: in
        ev(at(10, 12)),
        ev(at(31, 23, minute=59, second=59, microsecond=999999)),  # the last microsecond: in
        ev(datetime(2024, 4, 1, tzinfo=UTC)),  # exactly the end: out
        ev(at(29, month=2, hour=23)),  # before: out
    ]
    assert total(events, Spec.build("count"), *MARCH) == 3


def test_count_of_nothing_is_zero():
    assert aggregate([], Spec.build("count"), *MARCH) == {(): D(0)}


# --- sum ---------------------------------------------------------------------------------------------------


def test_sum_adds_the_values_exactly():
    events = [ev(at(2), "1.5"), ev(at(3), "2.25"), ev(at(4), "0.000000000001"), ev(at(5), "-0.75")]
    assert total(events, Spec.build("sum", field_name="bytes"), *MARCH) == D("3.000000000001")


def test_sum_beyond_28_digits_loses_nothing():
    # Python's default context keeps 28 significant digits; a sum of Decimal(38, 12) values needs more.
    big = "12345678901234567890123456.123456789012"
    total_value = total([ev(at(2), big), ev(at(3), big)], Spec.build("sum", field_name="v"), *MARCH)
    assert total_value == D("24691357802469135780246912.246913578024")


# --- max ---------------------------------------------------------------------------------------------------


def test_max_is_the_largest_value_in_the_range():
    events = [
        ev(at(2), 3),
        ev(at(3), 7),
        ev(at(4), 5),
        ev(at(28, month=2), 100),
        ev(datetime(2024, 4, 1, tzinfo=UTC), 99),
    ]
    assert total(events, Spec.build("max", field_name="seats"), *MARCH) == 7


def test_max_of_negative_values_and_of_nothing():
    spec = Spec.build("max", field_name="t")
    assert total([ev(at(2), -3), ev(at(3), "-1.5")], spec, *MARCH) == D("-1.5")
    assert total([], spec, *MARCH) == 0


def test_max_with_carry_over_counts_the_level_held_when_the_range_opens():
    spec = Spec.build("max", field_name="seats", carries_over=True)
    # 9 seats reported in February and never changed until 3 and 7 in March: March's peak is 9.
    assert total([ev(at(20, month=2), 9), ev(at(2), 3), ev(at(3), 7)], spec, *MARCH) == 9
    # Only the last February value is carried: 9 then 2 in February, so the peak in March is 7.
    assert total([ev(at(10, month=2), 9), ev(at(20, month=2), 2), ev(at(3), 7)], spec, *MARCH) == 7
    # Nothing in March: the carried level is the peak.
    assert total([ev(at(20, month=2), 4)], spec, *MARCH) == 4


# --- unique count --------------------------------------------------------------------------------------------


def test_unique_count_counts_distinct_texts_and_skips_events_without_the_property():
    events = [
        ev(at(2), user="a"),
        ev(at(3), user="b"),
        ev(at(4), user="a"),
        ev(at(5), user=1),
        ev(at(6), user="1"),  # the same text as the number 1
        ev(at(7)),  # no user: not counted
        ev(at(8), user=None),  # null: not counted
        ev(at(20, month=2), user="c"),  # before the range
    ]
    assert total(events, Spec.build("unique_count", field_name="user"), *MARCH) == 3


# --- latest --------------------------------------------------------------------------------------------------


def test_latest_is_by_event_time_not_arrival():
    # The event of the 20th arrived first (lower id) but is the latest in event time.
    events = [ev(at(20), 3, event_id=1), ev(at(10), 5, event_id=2)]
    assert total(events, Spec.build("latest", field_name="seats"), *MARCH) == 3


def test_latest_at_the_same_instant_is_the_last_received():
    events = [ev(at(10), 4, event_id=7), ev(at(10), 6, event_id=8), ev(at(5), 9, event_id=9)]
    assert total(events, Spec.build("latest", field_name="seats"), *MARCH) == 6


def test_latest_carries_over_only_when_the_meter_says_so():
    events = [ev(at(10, month=2), 8), ev(at(20, month=2), 12)]
    assert total(events, Spec.build("latest", field_name="seats", carries_over=True), *MARCH) == 12
    assert total(events, Spec.build("latest", field_name="seats"), *MARCH) == 0
    # An event in the range wins over the carried value, even a lower one.
    assert total([*events, ev(at(3), 2)], Spec.build("latest", field_name="seats", carries_over=True), *MARCH) == 2


# --- weighted sum --------------------------------------------------------------------------------------------


def test_weighted_sum_is_the_level_averaged_over_the_range():
    spec = Spec.build("weighted_sum", field_name="gb", carries_over=True)
    # +10 GB in February; +20 GB on March 16 (15 days in); -30 GB on March 31 (30 days in).
    # Level 10 for 15 days, 30 for 15 days, 0 for 1 day: (150 + 450 + 0) / 31 = 19.354838709677|419...
    events = [ev(at(10, month=2), 10), ev(at(16), 20), ev(at(31), -30)]
    assert total(events, spec, *MARCH) == D("19.354838709677")


def test_weighted_sum_without_carry_over_opens_at_zero():
    spec = Spec.build("weighted_sum", field_name="gb")
    # Level 0 for 15 days, 20 for 15 days, -10 for 1 day: (300 - 10) / 31 = 9.354838709677|419...
    events = [ev(at(10, month=2), 10), ev(at(16), 20), ev(at(31), -30)]
    assert total(events, spec, *MARCH) == D("9.354838709677")


def test_weighted_sum_across_a_period_boundary():
    spec = Spec.build("weighted_sum", field_name="gb", carries_over=True)
    events = [ev(at(10, month=2), 10), ev(at(16), 20)]
    # February: 10 GB from the 10th for 20 of its 29 days: 200 / 29 = 6.896551724137|931 -> ...138.
    assert total(events, spec, *FEBRUARY) == D("6.896551724138")
    # March: 10 GB carried in for 15 days, 30 GB for 16 days: (150 + 480) / 31 = 20.322580645161|290...
    assert total(events, spec, *MARCH) == D("20.322580645161")
    # Both months together: (200 + 630) / 60 days = 13.8333...
    assert total(events, spec, FEBRUARY[0], MARCH[1]) == D("13.833333333333")


def test_weighted_sum_held_for_half_the_range_is_half_the_level():
    start, end = at(1), at(1, 12)
    assert weighted_sum(D(0), [(at(1, 6), D(100))], start, end) == 50
    # To the microsecond: 1 GB held for one microsecond of a second.
    second = (at(1), at(1) + timedelta(seconds=1))
    last_microsecond = second[1] - timedelta(microseconds=1)
    assert weighted_sum(D(0), [(last_microsecond, D(1))], *second) == D("0.000001")


def test_weighted_sum_events_at_the_same_instant_net_out():
    changes = [(at(11), D(5)), (at(11), D(-5))]
    assert level_time(D(2), changes, at(1), at(21)) == 2 * 20 * 86_400_000_000
    assert weighted_sum(D(2), changes, at(1), at(21)) == 2


def test_weighted_sum_rejects_a_change_outside_its_range():
    with pytest.raises(ValueError, match="outside the range"):
        level_time(D(0), [(at(2, month=4), D(1))], *MARCH)


# --- filters -------------------------------------------------------------------------------------------------


def test_filters_of_meter_and_charge_must_all_match():
    spec = Spec.build("count", filters=[{"region": ["eu", "us"]}, {"tier": ["gold"]}])
    events = [
        ev(at(2), region="eu", tier="gold"),  # in
        ev(at(3), region="us", tier="gold"),  # in
        ev(at(4), region="apac", tier="gold"),  # region not listed
        ev(at(5), region="eu", tier="silver"),  # tier not listed
        ev(at(6), tier="gold"),  # no region: never matches
        ev(at(7), region=None, tier="gold"),  # null region: never matches
    ]
    assert total(events, spec, *MARCH) == 2


def test_filters_compare_values_as_text():
    spec = Spec.build("count", filters=[{"plan": [1], "beta": ["true"]}])
    events = [ev(at(2), plan=1, beta=True), ev(at(3), plan="1", beta="true"), ev(at(4), plan=1.5, beta=True)]
    assert total(events, spec, *MARCH) == 2
    assert property_text(True) == "true" and property_text(1.5) == "1.5" and property_text(None) is None


def test_filters_apply_to_carried_events_too():
    spec = Spec.build("latest", field_name="seats", carries_over=True, filters=[{"env": ["prod"]}])
    events = [ev(at(10, month=2), 5, env="prod"), ev(at(20, month=2), 50, env="test")]
    assert total(events, spec, *MARCH) == 5


# --- group by ------------------------------------------------------------------------------------------------


def test_group_by_gives_one_quantity_per_tuple_with_a_null_group():
    spec = Spec.build("sum", field_name="tokens", group_by=[["region"], ["model", "region"]])
    assert spec.group_by == ("region", "model")
    events = [
        ev(at(2), 10, region="eu", model="large"),
        ev(at(3), 5, region="eu", model="large"),
        ev(at(4), 7, region="eu", model="small"),
        ev(at(5), 1, region="us", model="large"),
        ev(at(6), 2, model="large"),  # no region: the None group
        ev(at(20, month=2), 99, region="apac", model="large"),  # outside: no group
    ]
    assert aggregate(events, spec, *MARCH) == {
        ("eu", "large"): 15,
        ("eu", "small"): 7,
        ("us", "large"): 1,
        (None, "large"): 2,
    }
    assert list(aggregate(events, spec, *MARCH)) == [("eu", "large"), ("eu", "small"), ("us", "large"), (None, "large")]


def test_group_by_without_events_has_no_group():
    assert aggregate([], Spec.build("count", group_by=[["region"]]), *MARCH) == {}


def test_group_by_carries_each_group_separately():
    spec = Spec.build("weighted_sum", field_name="gb", carries_over=True, group_by=[["bucket"]])
    events = [
        ev(at(5, month=2), 62, bucket="logs"),  # 62 GB all March
        ev(at(5, month=2), 31, bucket="media"),
        ev(at(17), -31, bucket="media"),  # 31 GB for 16 days -> 16
        ev(at(5, month=2), 4, bucket="tmp"),
        ev(at(6, month=2), -4, bucket="tmp"),  # level 0 carried, nothing in March: no group
        ev(at(11), 31, bucket="new"),  # 31 GB for the last 21 days -> 21
    ]
    assert aggregate(events, spec, *MARCH) == {("logs",): 62, ("media",): 16, ("new",): 21}


# --- rounding ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rounding", "precision", "value", "expected"),
    [
        ("none", 0, "2.5", "2.5"),
        ("half_up", 0, "2.5", "3"),
        ("half_up", 0, "2.49", "2"),
        ("half_up", 2, "1.005", "1.01"),
        ("up", 0, "2.1", "3"),
        ("up", 0, "2", "2"),
        ("up", 0, "-1.5", "-1"),  # up is toward +infinity
        ("down", 0, "2.9", "2"),
        ("down", 0, "-1.5", "-2"),
        ("down", 3, "0.12345", "0.123"),
    ],
)
def test_rounding_modes(rounding, precision, value, expected):
    result = round_quantity(D(value), rounding, precision)
    assert result == D(expected) and str(result) == expected


def test_rounding_applies_to_the_final_quantity_not_each_event():
    spec = Spec.build("sum", field_name="gb", rounding="half_up", rounding_precision=0)
    # 0.4 + 0.4 = 0.8 -> 1 (rounding each event first would give 0).
    assert total([ev(at(2), "0.4"), ev(at(3), "0.4")], spec, *MARCH) == 1


def test_rounding_applies_to_each_group():
    spec = Spec.build("sum", field_name="gb", rounding="up", group_by=[["r"]])
    assert aggregate([ev(at(2), "0.1", r="a"), ev(at(3), "1.01", r="b")], spec, *MARCH) == {("a",): 1, ("b",): 2}


def test_weighted_sum_rounding_by_meter():
    spec = Spec.build("weighted_sum", field_name="gb", carries_over=True, rounding="half_up", rounding_precision=2)
    events = [ev(at(10, month=2), 10), ev(at(16), 20), ev(at(31), -30)]
    assert total(events, spec, *MARCH) == D("19.35")


# --- late events and arrival order ---------------------------------------------------------------------------


def test_a_late_event_changes_the_past_range_it_belongs_to():
    spec = Spec.build("sum", field_name="calls")
    events = [ev(at(10, month=2), 5, event_id=1), ev(at(5), 7, event_id=2)]
    assert total(events, spec, *FEBRUARY) == 5
    # Received in March, for February: February's total includes it, March's does not.
    events.append(ev(at(28, month=2, hour=23), 3, event_id=3))
    assert total(events, spec, *FEBRUARY) == 8
    assert total(events, spec, *MARCH) == 7


def test_a_late_storage_change_moves_the_carried_level():
    spec = Spec.build("weighted_sum", field_name="gb", carries_over=True)
    events = [ev(at(1, month=2), 10)]
    assert total(events, spec, *MARCH) == 10
    events.append(ev(at(15, month=2), 5))  # arrives late, in March
    assert total(events, spec, *MARCH) == 15


# --- ranges, hours, specs ------------------------------------------------------------------------------------


def test_ranges_must_be_aware_and_not_empty():
    with pytest.raises(ValueError, match="aware"):
        aggregate([], Spec.build("count"), datetime(2024, 3, 1), datetime(2024, 4, 1))
    with pytest.raises(ValueError, match="empty usage range"):
        aggregate([], Spec.build("count"), MARCH[1], MARCH[0])


def test_a_month_in_india_splits_into_whole_utc_hours_and_half_hour_edges():
    ist = timezone(timedelta(hours=5, minutes=30))
    start, end = datetime(2024, 3, 1, tzinfo=ist), datetime(2024, 4, 1, tzinfo=ist)
    whole, edges = split_by_whole_hours(start, end)
    assert whole == (datetime(2024, 2, 29, 19, tzinfo=UTC), datetime(2024, 3, 31, 18, tzinfo=UTC))
    assert edges == [
        (start, datetime(2024, 2, 29, 19, tzinfo=UTC)),
        (datetime(2024, 3, 31, 18, tzinfo=UTC), end),
    ]


def test_hour_splits_of_aligned_and_short_ranges():
    assert split_by_whole_hours(*MARCH) == (MARCH, [])
    short = (at(1, 10, minute=5), at(1, 10, minute=55))
    assert split_by_whole_hours(*short) == (None, [short])
    across = (at(1, 10, minute=5), at(1, 11, minute=5))
    assert split_by_whole_hours(*across) == (None, [across])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aggregation": "median"}, "Unknown aggregation"),
        ({"aggregation": "sum"}, "needs the event property"),
        ({"aggregation": "count", "carries_over": True}, "carry over"),
        ({"aggregation": "count", "rounding": "bankers"}, "Unknown rounding"),
        ({"aggregation": "count", "rounding": "up", "rounding_precision": 13}, "precision"),
    ],
)
def test_specs_refuse_what_no_meter_can_be(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Spec.build(**kwargs)


def test_spec_for_a_meter_merges_the_charge_filters_and_group_by():
    class MeterLike:
        aggregation = "sum"
        field_name = "tokens"
        filters = {"env": ["prod"]}
        group_by = ["region"]
        carries_over = False
        rounding = "up"
        rounding_precision = 1

    spec = Spec.for_meter(MeterLike(), filters={"model": ["large", "xl"]}, group_by=["model", "region"])
    assert spec.filters == (("env", frozenset({"prod"})), ("model", frozenset({"large", "xl"})))
    assert spec.group_by == ("region", "model")
    assert (spec.rounding, spec.rounding_precision) == ("up", 1)


def test_weighted_sum_over_a_local_month_across_dst_counts_real_hours():
    # Python subtracts datetimes of one zone by wall clock; March 2024 in New York has 743 real hours.
    new_york = ZoneInfo("America/New_York")
    start, end = datetime(2024, 3, 1, tzinfo=new_york), datetime(2024, 4, 1, tzinfo=new_york)
    spec = Spec.build("weighted_sum", field_name="gb")
    # 743 GB from the 31st at 00:00 EDT: held 24 of 743 hours.
    events = [ev(datetime(2024, 3, 31, tzinfo=new_york), 743)]
    assert total(events, spec, start, end) == 24
    assert level_time(D(1), [], start, end) == 743 * 3_600_000_000
