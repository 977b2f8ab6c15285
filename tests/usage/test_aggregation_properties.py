"""Properties of aggregation that must hold for any events: splitting a range, reordering arrivals,
grouping and filtering never change what is counted."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

from hypothesis import given, settings
from hypothesis import strategies as st

from usage.aggregation import (
    EXACT,
    VALUE_QUANTUM,
    Event,
    Spec,
    aggregate,
    level_time,
    micros,
    total,
    weighted_sum,
)

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_MICROS = 90 * 86_400 * 1_000_000  # events fall within 90 days

moments = st.integers(min_value=0, max_value=SPAN_MICROS).map(lambda us: ORIGIN + timedelta(microseconds=us))
values = st.decimals(min_value=-(10**9), max_value=10**9, places=12, allow_nan=False, allow_infinity=False)
regions = st.sampled_from(["eu", "us", "apac", None])
users = st.sampled_from(["u1", "u2", "u3", "u4", 5])


@st.composite
def event_lists(draw, min_size: int = 0) -> list[Event]:
    size = draw(st.integers(min_value=min_size, max_value=30))
    events = []
    for index in range(size):
        properties = {"user": draw(users)}
        region = draw(regions)
        if region is not None or draw(st.booleans()):
            properties["region"] = region
        events.append(Event(timestamp=draw(moments), value=draw(values), properties=properties, id=index + 1))
    return events


@st.composite
def split_ranges(draw) -> tuple[datetime, datetime, datetime]:
    a, b, c = sorted(draw(st.lists(moments, min_size=3, max_size=3, unique=True)))
    return a, b, c


def inside(events: list[Event], start: datetime, end: datetime) -> list[Event]:
    return [event for event in events if start <= event.timestamp < end]


@given(event_lists(), split_ranges())
def test_count_and_sum_of_two_halves_add_up(events, bounds):
    start, middle, end = bounds
    for spec in (Spec.build("count"), Spec.build("sum", field_name="v")):
        assert total(events, spec, start, middle) + total(events, spec, middle, end) == total(events, spec, start, end)


@given(event_lists(), split_ranges())
def test_max_of_the_whole_is_the_max_of_its_non_empty_parts(events, bounds):
    start, middle, end = bounds
    spec = Spec.build("max", field_name="v")
    parts = [total(events, spec, a, b) for a, b in ((start, middle), (middle, end)) if inside(events, a, b)]
    assert total(events, spec, start, end) == max(parts, default=Decimal(0))


@given(event_lists(), split_ranges())
def test_unique_count_of_the_whole_lies_between_its_parts_max_and_sum(events, bounds):
    start, middle, end = bounds
    spec = Spec.build("unique_count", field_name="user")
    first, second = total(events, spec, start, middle), total(events, spec, middle, end)
    assert max(first, second) <= total(events, spec, start, end) <= first + second


@given(event_lists(), split_ranges(), st.booleans())
def test_latest_of_the_whole_is_the_second_parts_unless_it_is_empty(events, bounds, carries_over):
    start, middle, end = bounds
    spec = Spec.build("latest", field_name="v", carries_over=carries_over)
    whole = total(events, spec, start, end)
    if inside(events, middle, end):
        assert whole == total(events, spec, middle, end)
    else:
        assert whole == total(events, spec, start, middle)
    if carries_over:
        # With carry-over the second part alone already knows the latest value.
        assert total(events, spec, middle, end) == whole


@given(event_lists(), split_ranges())
def test_weighted_sums_of_two_parts_weighted_by_their_durations_equal_the_whole(events, bounds):
    start, middle, end = bounds
    with localcontext(EXACT):  # the test's own sums must be exact too (the default context has 28 digits)
        check_weighted_split(events, start, middle, end)


def check_weighted_split(events, start, middle, end):
    opening = sum((e.value for e in events if e.timestamp < start), Decimal(0))
    middle_level = sum((e.value for e in events if e.timestamp < middle), Decimal(0))

    def changes(a, b):
        return [(e.timestamp, e.value) for e in inside(events, a, b)]

    # Exactly, on the level x time integrals.
    assert level_time(opening, changes(start, middle), start, middle) + level_time(
        middle_level, changes(middle, end), middle, end
    ) == level_time(opening, changes(start, end), start, end)
    # And on the averages, to the rounding of each (half a quantum each, weighted by durations <= 1).
    spec = Spec.build("weighted_sum", field_name="v", carries_over=True)
    first, second = total(events, spec, start, middle), total(events, spec, middle, end)
    recombined = (first * micros(middle - start) + second * micros(end - middle)) / micros(end - start)
    assert abs(recombined - total(events, spec, start, end)) <= VALUE_QUANTUM


@given(event_lists(), split_ranges())
def test_carry_over_of_weighted_sum_equals_an_explicit_opening_level(events, bounds):
    start, _, end = bounds
    opening = sum((e.value for e in events if e.timestamp < start), Decimal(0))
    spec = Spec.build("weighted_sum", field_name="v", carries_over=True)
    changes = [(e.timestamp, e.value) for e in inside(events, start, end)]
    assert total(events, spec, start, end) == weighted_sum(opening, changes, start, end)


AGGREGATION_SPECS = [
    Spec.build("count"),
    Spec.build("sum", field_name="v"),
    Spec.build("max", field_name="v", carries_over=True),
    Spec.build("unique_count", field_name="user"),
    Spec.build("latest", field_name="v", carries_over=True),
    Spec.build("weighted_sum", field_name="v", carries_over=True),
]


@settings(max_examples=50)
@given(event_lists(), split_ranges(), st.randoms(use_true_random=False))
def test_arrival_order_never_matters(events, bounds, rng: random.Random):
    start, _, end = bounds
    shuffled = list(events)
    rng.shuffle(shuffled)
    for spec in AGGREGATION_SPECS:
        assert aggregate(shuffled, spec, start, end) == aggregate(events, spec, start, end)


@given(event_lists(), split_ranges())
def test_groups_partition_count_and_sum(events, bounds):
    start, _, end = bounds
    for aggregation, field in (("count", ""), ("sum", "v")):
        grouped = aggregate(events, Spec.build(aggregation, field_name=field, group_by=[["region"]]), start, end)
        assert sum(grouped.values(), Decimal(0)) == total(events, Spec.build(aggregation, field_name=field), start, end)


@given(event_lists(), split_ranges())
def test_each_group_is_the_aggregate_of_its_own_events(events, bounds):
    start, _, end = bounds
    for spec in AGGREGATION_SPECS:
        grouped = aggregate(
            events,
            Spec.build(
                spec.aggregation, field_name=spec.field_name, carries_over=spec.carries_over, group_by=[["region"]]
            ),
            start,
            end,
        )
        for (region,), quantity in grouped.items():
            own = [e for e in events if e.properties.get("region") == region]
            assert total(own, spec, start, end) == quantity


@given(event_lists(), split_ranges(), st.sets(st.sampled_from(["eu", "us", "apac"]), min_size=1))
def test_a_filter_equals_aggregating_only_the_matching_events(events, bounds, allowed):
    start, _, end = bounds
    for spec in AGGREGATION_SPECS:
        filtered = Spec.build(
            spec.aggregation,
            field_name=spec.field_name,
            carries_over=spec.carries_over,
            filters=[{"region": sorted(allowed)}],
        )
        matching = [e for e in events if e.properties.get("region") in allowed]
        assert total(events, filtered, start, end) == total(matching, spec, start, end)


@given(event_lists(min_size=1), split_ranges())
def test_rounding_up_and_down_bracket_the_exact_quantity(events, bounds):
    start, _, end = bounds
    for aggregation in ("sum", "weighted_sum"):
        exact = total(events, Spec.build(aggregation, field_name="v"), start, end)
        up = total(events, Spec.build(aggregation, field_name="v", rounding="up", rounding_precision=2), start, end)
        down = total(events, Spec.build(aggregation, field_name="v", rounding="down", rounding_precision=2), start, end)
        assert down <= exact <= up and up - down in (0, Decimal("0.01"))
