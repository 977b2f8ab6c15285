"""Reads over usage: the quantity of a meter for a customer over any time range, and current period usage.

The semantics are usage.aggregation's (the reference, pure); this module computes the same numbers with as
little work as possible on PostgreSQL:

- unfiltered, ungrouped count / sum / max: the hourly rollups for the whole UTC hours inside the range plus
  the raw events of the partial hours at its edges (exact for any range, in any timezone) — one statement;
- latest: the last event by (timestamp, id) through the (customer_id, meter_id, timestamp) index;
- unique count: COUNT(DISTINCT properties ->> field) over the range;
- weighted sum: the level before the range with one SUM (from the rollups when unfiltered), then the
  range's changes in time order, integrated exactly in Python;
- filters and group-by: one aggregate over the raw events of the range, grouped by the properties' text.

Other databases (the embedded SQLite default) read the events of the range and run the pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import Decimal, localcontext
from typing import Any

from django.db import connection

from contracts.models import Charge, Subscription
from contracts.periods import Period
from contracts.selectors import current_period
from customers.models import Customer
from usage import aggregation
from usage.aggregation import EXACT, ZERO, Event, GroupKey, Spec
from usage.models import Meter, UsageEvent, UsageHourlyRollup

EVENTS = UsageEvent._meta.db_table
ROLLUPS = UsageHourlyRollup._meta.db_table
CURRENT_USAGE_STATUSES = (Subscription.Status.ACTIVE, Subscription.Status.TRIALING)


# --- one meter, one customer, one range ------------------------------------------------------------------------


def meter_quantities(
    customer: Customer | int,
    meter: Meter,
    start: datetime,
    end: datetime,
    *,
    filters: Mapping[str, Sequence[Any]] | None = None,
    group_by: Sequence[str] | None = None,
) -> dict[GroupKey, Decimal]:
    """The meter's quantity for the customer over [start, end), one per group (the () group without group-by),
    narrowed by `filters` and split by `group_by` on top of the meter's own."""
    return quantities_for_spec(customer, meter, Spec.for_meter(meter, filters=filters, group_by=group_by), start, end)


def meter_quantity(
    customer: Customer | int,
    meter: Meter,
    start: datetime,
    end: datetime,
    *,
    filters: Mapping[str, Sequence[Any]] | None = None,
) -> Decimal:
    """The single quantity of a meter without group-by keys."""
    spec = Spec.for_meter(meter, filters=filters)
    if spec.group_by:
        raise ValueError(f"Meter '{meter.code}' groups its events; use meter_quantities().")
    return quantities_for_spec(customer, meter, spec, start, end)[()]


def quantities_for_spec(
    customer: Customer | int, meter: Meter | int, spec: Spec, start: datetime, end: datetime
) -> dict[GroupKey, Decimal]:
    start, end = aggregation.check_range(start, end)
    customer_id = customer if isinstance(customer, int) else customer.pk
    meter_id = meter if isinstance(meter, int) else meter.pk
    if connection.vendor == "postgresql":
        raw = _Postgres(customer_id, meter_id, spec, start, end).quantities()
    else:
        raw = _in_python(customer_id, meter_id, spec, start, end)
    return _finish(spec, raw)


def _finish(spec: Spec, raw: dict[GroupKey, Decimal]) -> dict[GroupKey, Decimal]:
    """Round each quantity, give the () group its 0 when nothing matched, and order the groups."""
    quantities = {
        key: _plain(aggregation.round_quantity(value, spec.rounding, spec.rounding_precision), spec)
        for key, value in raw.items()
    }
    if not spec.group_by:
        quantities.setdefault(
            (), _plain(aggregation.round_quantity(ZERO, spec.rounding, spec.rounding_precision), spec)
        )
    return dict(sorted(quantities.items(), key=lambda item: aggregation.group_sort_key(item[0])))


def _plain(value: Decimal, spec: Spec) -> Decimal:
    """Database sums carry the column's 12 decimal places; an unrounded quantity drops the trailing zeros
    (a rounded one keeps the precision its meter asked for)."""
    if spec.rounding != "none":
        return value
    with localcontext(EXACT):
        if value == value.to_integral_value():
            return value.quantize(Decimal(1))
        return value.normalize()


def _in_python(customer_id: int, meter_id: int, spec: Spec, start: datetime, end: datetime) -> dict[GroupKey, Decimal]:
    rows = UsageEvent.objects.filter(customer_id=customer_id, meter_id=meter_id, timestamp__lt=end)
    if not spec.carries_over:
        rows = rows.filter(timestamp__gte=start)
    events = [
        Event(timestamp=row.timestamp, value=row.value, properties=row.properties or {}, id=row.id)
        for row in rows.only("id", "timestamp", "value", "properties").order_by().iterator(chunk_size=5000)
    ]
    # Rounded once, by _finish.
    return aggregation.aggregate(events, replace(spec, rounding="none"), start, end)


class _Postgres:
    """The SQL of one quantity query. Every statement reads the (customer_id, meter_id, timestamp) index of
    the event partitions of the range, or the rollups' (customer_id, meter_id, hour) unique index.

    The statements are assembled from constant table names and placeholders only; every value (ids, times,
    property names, filter values) is a bound parameter, hence the S608 waivers."""

    def __init__(self, customer_id: int, meter_id: int, spec: Spec, start: datetime, end: datetime) -> None:
        self.customer_id = customer_id
        self.meter_id = meter_id
        self.spec = spec
        self.start = start
        self.end = end

    # SQL fragments -----------------------------------------------------------------------------------------

    def _filters(self) -> tuple[str, list[Any]]:
        sql, params = "", []
        for key, values in self.spec.filters:
            sql += " AND properties ->> %s = ANY(%s)"
            params += [key, sorted(values)]
        return sql, params

    def _events(self, time_sql: str, time_params: Sequence[Any]) -> tuple[str, list[Any]]:
        """FROM ... WHERE for this customer's and meter's matching events within a time condition."""
        filter_sql, filter_params = self._filters()
        sql = f" FROM {EVENTS} WHERE customer_id = %s AND meter_id = %s AND {time_sql}{filter_sql}"
        return sql, [self.customer_id, self.meter_id, *time_params, *filter_params]

    def _in_range(self) -> tuple[str, list[Any]]:
        return self._events('"timestamp" >= %s AND "timestamp" < %s', [self.start, self.end])

    def _before(self, moment: datetime | None = None) -> tuple[str, list[Any]]:
        return self._events('"timestamp" < %s', [moment or self.start])

    def _groups(self) -> tuple[list[str], list[Any]]:
        """The group-by columns (g0, g1, ...) as select expressions and their parameters."""
        return [f"properties ->> %s AS g{index}" for index in range(len(self.spec.group_by))], list(self.spec.group_by)

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    # quantities --------------------------------------------------------------------------------------------

    def quantities(self) -> dict[GroupKey, Decimal]:
        kind = self.spec.aggregation
        if kind in ("count", "sum", "max") and not self.spec.filters and not self.spec.group_by:
            return self._from_rollups()
        if kind in ("count", "sum", "max", "unique_count"):
            return self._grouped_aggregate()
        if kind == "latest":
            return self._latest()
        return self._weighted_sum()

    def _from_rollups(self) -> dict[GroupKey, Decimal]:
        whole, edges = aggregation.split_by_whole_hours(self.start, self.end)
        parts, params = [], []
        if whole is not None:
            parts.append(
                f"SELECT coalesce(sum(event_count), 0) AS n, coalesce(sum(value_sum), 0) AS s, max(value_max) AS m"  # noqa: S608
                f" FROM {ROLLUPS} WHERE customer_id = %s AND meter_id = %s AND hour >= %s AND hour < %s"
            )
            params += [self.customer_id, self.meter_id, *whole]
        for edge_start, edge_end in edges:
            edge_sql, edge_params = self._events('"timestamp" >= %s AND "timestamp" < %s', [edge_start, edge_end])
            parts.append(f"SELECT count(*) AS n, coalesce(sum(value), 0) AS s, max(value) AS m{edge_sql}")
            params += edge_params
        union = " UNION ALL ".join(parts)
        count, value_sum, value_max = self._fetch(
            f"SELECT coalesce(sum(n), 0), coalesce(sum(s), 0), max(m) FROM ({union}) AS parts",  # noqa: S608
            params,
        )[0]
        if self.spec.aggregation == "count":
            return {(): Decimal(count)}
        if self.spec.aggregation == "sum":
            return {(): value_sum}
        carried = self._carried_values().get(()) if self.spec.carries_over else None
        candidates = [value for value in (value_max, carried) if value is not None]
        return {(): max(candidates, default=ZERO)}

    def _grouped_aggregate(self) -> dict[GroupKey, Decimal]:
        groups, group_params = self._groups()
        measure = {
            "count": "count(*)",
            "sum": "coalesce(sum(value), 0)",
            "max": "max(value)",
            "unique_count": "count(DISTINCT properties ->> %s)",
        }[self.spec.aggregation]
        measure_params = [self.spec.field_name] if self.spec.aggregation == "unique_count" else []
        range_sql, range_params = self._in_range()
        group_sql = f" GROUP BY {', '.join(str(i + 1) for i in range(len(groups)))}" if groups else ""
        rows = self._fetch(
            f"SELECT {', '.join([*groups, measure])}{range_sql}{group_sql}",
            [*group_params, *measure_params, *range_params],
        )
        width = len(groups)
        found: dict[GroupKey, Decimal] = {}
        for row in rows:
            if row[width] is not None:  # max over no row (ungrouped) or over null values only
                found[tuple(row[:width])] = Decimal(row[width])
        if self.spec.aggregation == "max" and self.spec.carries_over:
            return self._merge_carried(found, max)
        return found

    def _latest_rows(self, where_sql: str, params: list[Any]) -> dict[GroupKey, Decimal]:
        """The value of the last event by (timestamp, id) of each group."""
        groups, group_params = self._groups()
        if not groups:
            rows = self._fetch(f'SELECT value{where_sql} ORDER BY "timestamp" DESC, id DESC LIMIT 1', params)
            return {(): rows[0][0] if rows[0][0] is not None else ZERO} if rows else {}
        names = ", ".join(f"g{index}" for index in range(len(groups)))
        rows = self._fetch(
            f'SELECT DISTINCT ON ({names}) {names}, value FROM (SELECT {", ".join(groups)}, "timestamp", id, value'  # noqa: S608
            f'{where_sql}) AS matching ORDER BY {names}, "timestamp" DESC, id DESC',
            [*group_params, *params],
        )
        return {tuple(row[:-1]): row[-1] if row[-1] is not None else ZERO for row in rows}

    def _carried_values(self) -> dict[GroupKey, Decimal]:
        """latest and max: the last value of each group before the range."""
        return self._latest_rows(*self._before())

    def _merge_carried(self, found: dict[GroupKey, Decimal], combine: Any) -> dict[GroupKey, Decimal]:
        carried = self._carried_values()
        merged = dict(found)
        for key, value in carried.items():
            if key in merged:
                merged[key] = combine(merged[key], value)
            elif value:
                merged[key] = value  # a group only carried in, at a non-zero level
        return merged

    def _latest(self) -> dict[GroupKey, Decimal]:
        found = self._latest_rows(*self._in_range())
        if not self.spec.carries_over:
            return found
        if not self.spec.group_by:
            return found or {key: value for key, value in self._carried_values().items() if value}
        return self._merge_carried(found, lambda inside, _carried: inside)

    def _weighted_sum(self) -> dict[GroupKey, Decimal]:
        openings = self._opening_levels() if self.spec.carries_over else {}
        groups, group_params = self._groups()
        range_sql, range_params = self._in_range()
        columns = ", ".join([*groups, '"timestamp"', "value"])
        rows = self._fetch(f"SELECT {columns}{range_sql}", [*group_params, *range_params])
        width = len(groups)
        changes: dict[GroupKey, list[tuple[datetime, Decimal]]] = {}
        for row in rows:
            group = changes.setdefault(tuple(row[:width]), [])
            if row[width + 1] is not None:
                group.append((row[width], row[width + 1]))
        quantities: dict[GroupKey, Decimal] = {}
        for key in changes.keys() | openings.keys():
            opening = openings.get(key, ZERO)
            if key not in changes and not opening:
                continue
            quantities[key] = aggregation.weighted_sum(opening, changes.get(key, []), self.start, self.end)
        return quantities

    def _opening_levels(self) -> dict[GroupKey, Decimal]:
        """weighted_sum: the level each group holds when the range opens, the sum of every earlier change.
        Unfiltered and ungrouped, the whole hours before the range come from the rollups."""
        if not self.spec.filters and not self.spec.group_by:
            hour = aggregation.floor_hour(self.start)
            edge_sql, edge_params = self._events('"timestamp" >= %s AND "timestamp" < %s', [hour, self.start])
            level = self._fetch(
                f"SELECT (SELECT coalesce(sum(value_sum), 0) FROM {ROLLUPS}"  # noqa: S608
                f" WHERE customer_id = %s AND meter_id = %s AND hour < %s)"
                f" + (SELECT coalesce(sum(value), 0){edge_sql})",
                [self.customer_id, self.meter_id, hour, *edge_params],
            )[0][0]
            return {(): level}
        groups, group_params = self._groups()
        before_sql, before_params = self._before()
        group_sql = ", ".join(str(i + 1) for i in range(len(groups)))
        rows = self._fetch(
            f"SELECT {', '.join([*groups, 'coalesce(sum(value), 0)'])}{before_sql}"
            + (f" GROUP BY {group_sql}" if groups else ""),
            [*group_params, *before_params],
        )
        return {tuple(row[:-1]): row[-1] for row in rows}


# --- current period usage ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChargeUsage:
    charge: Charge
    meter: Meter
    spec: Spec
    quantities: dict[GroupKey, Decimal]

    @property
    def grouped(self) -> bool:
        return bool(self.spec.group_by)

    @property
    def quantity(self) -> Decimal | None:
        """The quantity of an ungrouped charge (None for a grouped one: see `groups`)."""
        return None if self.grouped else self.quantities[()]

    @property
    def groups(self) -> list[dict[str, Any]]:
        if not self.grouped:
            return []
        return [
            {"group": dict(zip(self.spec.group_by, key, strict=True)), "quantity": value}
            for key, value in self.quantities.items()
        ]


@dataclass(frozen=True)
class SubscriptionUsage:
    subscription: Subscription
    period: Period
    start: datetime  # the period's first instant, in UTC
    end: datetime
    charges: list[ChargeUsage] = field(default_factory=list)


def day_start(day: date, customer: Customer) -> datetime:
    """The first instant of a calendar day in the customer's timezone (period boundaries are local days)."""
    return datetime.combine(day, time.min, tzinfo=customer.timezone)


def period_bounds(period: Period, customer: Customer) -> tuple[datetime, datetime]:
    return day_start(period.start, customer), day_start(period.end, customer)


def current_usage(customer: Customer, *, now: datetime) -> list[SubscriptionUsage]:
    """For each active or trialing subscription of the customer with a period in progress, the quantity of
    every metered charge of its plan version over that whole period (events received so far), with the
    charge's filters and group-by applied. A weighted sum is the period's average if the current level
    holds until the period ends."""
    subscriptions = (
        Subscription.objects.filter(customer=customer, status__in=CURRENT_USAGE_STATUSES)
        .select_related("customer", "plan_version__plan")
        .order_by("start_date", "external_id")
    )
    usage: list[SubscriptionUsage] = []
    for subscription in subscriptions:
        period = current_period(subscription, now=now)
        if period is None:
            continue
        start, end = period_bounds(period, customer)
        charges = (
            Charge.objects.filter(plan_version_id=subscription.plan_version_id)
            .select_related("meter")
            .order_by("position", "id")
        )
        lines = []
        for charge in charges:
            spec = Spec.for_meter(charge.meter, filters=charge.filters, group_by=charge.group_by)
            lines.append(
                ChargeUsage(charge, charge.meter, spec, quantities_for_spec(customer, charge.meter, spec, start, end))
            )
        usage.append(SubscriptionUsage(subscription, period, start, end, lines))
    return usage
