"""Usage aggregation: the reference semantics of every meter, as pure functions over Decimal and datetimes.

No ORM here. usage.selectors computes the same quantities in SQL (rollups, index scans) for speed; its tests
check it against these functions over the same events. Invoicing, previews and simulations may call these
directly on events they already hold.

Semantics (DESIGN.md, "Meter"), over a half-open range [start, end) of event time:

- count: the number of events.
- sum: the sum of the events' values.
- max: the largest value; with carry-over, the level held when the range opens (the value of the latest
  event before it) counts too, so a seat count reported once in March is still March's peak in April.
- unique_count: the number of distinct values (as text) of properties[field_name]; events without it do
  not count.
- latest: the value of the latest event by event time (ties: the later-received one, the higher id); with
  carry-over and no event in the range, the latest event before it.
- weighted_sum: each event's value is a change of a level (+10 GB, -4 GB). The level opens at the sum of
  every change before the range (with carry-over; at 0 without) and the quantity is the time average of the
  level over the range: sum of level x (time held / range duration), exact to the microsecond.

Filters keep the events whose property (as text) is one of the listed values, for every listed property; a
missing property never matches. Group-by splits the events by the tuple of the named properties (a missing
property is the None group); a group appears when it has events in the range or carries a non-zero level
into it. Without group-by there is always exactly one quantity, the () group, 0 when nothing matched.
Rounding (none, half_up, up = toward +infinity, down = toward -infinity) to `rounding_precision` decimals
is applied last, to each final quantity.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any

AGGREGATIONS = ("count", "sum", "max", "unique_count", "latest", "weighted_sum")
CARRYING_AGGREGATIONS = ("latest", "max", "weighted_sum")
ROUNDING_MODES = {"half_up": ROUND_HALF_UP, "up": ROUND_CEILING, "down": ROUND_FLOOR}
ROUNDINGS = ("none", *ROUNDING_MODES)
# The scale of stored event values (Decimal(38, 12)): a time-weighted average is rounded to it, once.
VALUE_PLACES = 12
VALUE_QUANTUM = Decimal(1).scaleb(-VALUE_PLACES)
ZERO = Decimal(0)
ONE_MICROSECOND = timedelta(microseconds=1)
# Sums of Decimal(38, 12) values and level x microsecond products stay far below 100 digits, so every sum
# and product computed under this context is exact (Python's default context keeps only 28 digits).
EXACT = Context(prec=100)

GroupKey = tuple[str | None, ...]


@dataclass(frozen=True)
class Event:
    """What aggregation reads of a stored usage event."""

    timestamp: datetime
    value: Decimal | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    id: int = 0


@dataclass(frozen=True)
class Spec:
    """How a meter (with a charge's extra filters and group-by) reduces events to quantities."""

    aggregation: str
    field_name: str = ""
    filters: tuple[tuple[str, frozenset[str]], ...] = ()
    group_by: tuple[str, ...] = ()
    carries_over: bool = False
    rounding: str = "none"
    rounding_precision: int = 0

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"Unknown aggregation '{self.aggregation}'; use one of {', '.join(AGGREGATIONS)}.")
        if self.aggregation != "count" and not self.field_name:
            raise ValueError(f"A {self.aggregation} meter needs the event property it reads (field_name).")
        if self.carries_over and self.aggregation not in CARRYING_AGGREGATIONS:
            raise ValueError("Only latest, max and weighted_sum carry over between periods.")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"Unknown rounding '{self.rounding}'; use one of {', '.join(ROUNDINGS)}.")
        if not 0 <= self.rounding_precision <= VALUE_PLACES:
            raise ValueError(f"The rounding precision is 0 to {VALUE_PLACES} decimal places.")

    @classmethod
    def build(
        cls,
        aggregation: str,
        *,
        field_name: str = "",
        filters: Iterable[Mapping[str, Sequence[Any] | str | int]] = (),
        group_by: Iterable[Sequence[str]] = (),
        carries_over: bool = False,
        rounding: str = "none",
        rounding_precision: int = 0,
    ) -> Spec:
        """A spec from filter objects ({"region": ["eu"]}, all of which must match) and group-by key lists
        (merged in order, without repeats)."""
        return cls(
            aggregation=aggregation,
            field_name=field_name,
            filters=normalise_filters(filters),
            group_by=merge_group_by(group_by),
            carries_over=carries_over,
            rounding=rounding,
            rounding_precision=rounding_precision,
        )

    @classmethod
    def for_meter(
        cls,
        meter: Any,
        *,
        filters: Mapping[str, Sequence[Any]] | None = None,
        group_by: Sequence[str] | None = None,
    ) -> Spec:
        """The spec of a meter (anything with the Meter model's attributes), narrowed by a charge's filters
        and split by its group-by keys on top of the meter's own."""
        return cls.build(
            meter.aggregation,
            field_name=meter.field_name,
            filters=[meter.filters or {}, filters or {}],
            group_by=[meter.group_by or [], group_by or []],
            carries_over=meter.carries_over,
            rounding=meter.rounding,
            rounding_precision=meter.rounding_precision,
        )

    @property
    def reads_value(self) -> bool:
        return self.aggregation in ("sum", "max", "latest", "weighted_sum")


def normalise_filters(
    filters: Iterable[Mapping[str, Sequence[Any] | str | int]],
) -> tuple[tuple[str, frozenset[str]], ...]:
    conditions: list[tuple[str, frozenset[str]]] = []
    for mapping in filters:
        for key, values in mapping.items():
            if isinstance(values, str | int | float | bool):
                values = [values]
            texts = frozenset(text for text in map(property_text, values) if text is not None)
            if not texts:
                raise ValueError(f"The filter on '{key}' lists no value.")
            conditions.append((key, texts))
    return tuple(conditions)


def merge_group_by(group_by: Iterable[Sequence[str]]) -> tuple[str, ...]:
    keys: list[str] = []
    for sequence in group_by:
        if isinstance(sequence, str):
            raise ValueError("group_by is a list of property names, not one string.")
        keys.extend(key for key in sequence if key not in keys)
    return tuple(keys)


# --- properties ----------------------------------------------------------------------------------------------


def property_text(value: Any) -> str | None:
    """A property value as text, as PostgreSQL's `properties ->> 'key'` gives it, so that filters and groups
    computed here and in SQL agree: JSON null is None, booleans are true/false, numbers their JSON text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return str(Decimal(repr(value)))
    return json.dumps(value, separators=(", ", ": "), default=str)


def matches(properties: Mapping[str, Any], filters: Iterable[tuple[str, frozenset[str]]]) -> bool:
    return all(property_text(properties.get(key)) in allowed for key, allowed in filters)


def group_key(properties: Mapping[str, Any], group_by: Sequence[str]) -> GroupKey:
    return tuple(property_text(properties.get(key)) for key in group_by)


def group_sort_key(key: GroupKey) -> tuple[tuple[bool, str], ...]:
    """Groups in a stable order: by value, the None group of each key last."""
    return tuple((part is None, part or "") for part in key)


# --- reductions ------------------------------------------------------------------------------------------------


def check_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The range in UTC. Python subtracts and compares two datetimes of the same zone by wall clock, so a
    month in New York across the DST change would count 744 hours instead of 743: all arithmetic is in UTC."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("Usage ranges are aware datetimes (events are stored in UTC).")
    if start >= end:
        raise ValueError(f"An empty usage range: {start.isoformat()} is not before {end.isoformat()}.")
    return start.astimezone(UTC), end.astimezone(UTC)


def latest_event(events: Iterable[Event]) -> Event | None:
    """The latest event by event time; among events at the same instant, the last received (highest id)."""
    return max(events, key=lambda event: (event.timestamp, event.id), default=None)


def micros(delta: timedelta) -> int:
    return delta // ONE_MICROSECOND


def level_time(
    opening: Decimal, changes: Iterable[tuple[datetime, Decimal]], start: datetime, end: datetime
) -> Decimal:
    """The integral of the level over [start, end), in level x microseconds, exactly. `changes` are the
    (event time, change) pairs inside the range, in any order; the level opens at `opening`."""
    start, end = check_range(start, end)
    with localcontext(EXACT):
        total = ZERO
        level = opening
        cursor = start
        for timestamp, change in sorted(((moment.astimezone(UTC), change) for moment, change in changes)):
            if not start <= timestamp < end:
                raise ValueError(f"A change at {timestamp.isoformat()} is outside the range.")
            total += level * micros(timestamp - cursor)
            level += change
            cursor = timestamp
        return total + level * micros(end - cursor)


def weighted_sum(
    opening: Decimal, changes: Iterable[tuple[datetime, Decimal]], start: datetime, end: datetime
) -> Decimal:
    """The time-weighted level over [start, end): level_time / duration, rounded half-up to the value scale."""
    integral = level_time(opening, changes, start, end)
    start, end = check_range(start, end)
    with localcontext(EXACT):
        return (integral / micros(end - start)).quantize(VALUE_QUANTUM, rounding=ROUND_HALF_UP)


def round_quantity(value: Decimal, rounding: str, precision: int) -> Decimal:
    if rounding == "none":
        return value
    with localcontext(EXACT):
        return value.quantize(Decimal(1).scaleb(-precision), rounding=ROUNDING_MODES[rounding])


def _values(events: Iterable[Event]) -> list[Decimal]:
    return [event.value for event in events if event.value is not None]


def reduce_group(
    spec: Spec, inside: Sequence[Event], before: Sequence[Event], start: datetime, end: datetime
) -> Decimal:
    """The unrounded quantity of one group: `inside` are its events in [start, end), `before` its events
    before start (read only by carrying meters)."""
    with localcontext(EXACT):
        if spec.aggregation == "count":
            return Decimal(len(inside))
        if spec.aggregation == "sum":
            return sum(_values(inside), ZERO)
        if spec.aggregation == "unique_count":
            texts = {property_text(event.properties.get(spec.field_name)) for event in inside}
            texts.discard(None)
            return Decimal(len(texts))
        carried = opening_value(spec, before)
        if spec.aggregation == "max":
            candidates = _values(inside) + ([carried] if carried is not None else [])
            return max(candidates, default=ZERO)
        if spec.aggregation == "latest":
            last = latest_event(inside)
            if last is not None:
                return last.value if last.value is not None else ZERO
            return carried if carried is not None else ZERO
        # weighted_sum
        changes = [(event.timestamp, event.value) for event in inside if event.value is not None]
        return weighted_sum(carried or ZERO, changes, start, end)


def opening_value(spec: Spec, before: Sequence[Event]) -> Decimal | None:
    """What a carrying meter brings into the range: the last value (latest, max) or the summed level
    (weighted_sum). None when the meter does not carry over or nothing came before."""
    if not spec.carries_over or not before:
        return None
    if spec.aggregation == "weighted_sum":
        with localcontext(EXACT):
            return sum(_values(before), ZERO)
    last = latest_event(before)
    return last.value if last is not None else None


def aggregate(events: Iterable[Event], spec: Spec, start: datetime, end: datetime) -> dict[GroupKey, Decimal]:
    """The quantity of each group over [start, end), rounded. Events outside the range are read only for
    carry-over; events at or after `end` are ignored."""
    start, end = check_range(start, end)
    inside: dict[GroupKey, list[Event]] = {}
    before: dict[GroupKey, list[Event]] = {}
    for event in events:
        moment = event.timestamp.astimezone(UTC)
        if moment >= end or not matches(event.properties, spec.filters):
            continue
        if moment >= start:
            inside.setdefault(group_key(event.properties, spec.group_by), []).append(event)
        elif spec.carries_over:
            before.setdefault(group_key(event.properties, spec.group_by), []).append(event)

    quantities: dict[GroupKey, Decimal] = {}
    for key in inside.keys() | before.keys():
        value = reduce_group(spec, inside.get(key, []), before.get(key, []), start, end)
        if key not in inside and not value:
            continue  # a group only carried at level 0 has nothing to bill
        quantities[key] = round_quantity(value, spec.rounding, spec.rounding_precision)
    if not spec.group_by:
        quantities.setdefault((), round_quantity(ZERO, spec.rounding, spec.rounding_precision))
    return dict(sorted(quantities.items(), key=lambda item: group_sort_key(item[0])))


def total(events: Iterable[Event], spec: Spec, start: datetime, end: datetime) -> Decimal:
    """The single quantity of a spec without group-by."""
    if spec.group_by:
        raise ValueError("This spec groups its events; use aggregate() for one quantity per group.")
    return aggregate(events, spec, start, end)[()]


# --- hours (the rollups' grain) ------------------------------------------------------------------------------------


def floor_hour(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + timedelta(hours=1)


def split_by_whole_hours(
    start: datetime, end: datetime
) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """[start, end) as its whole UTC hours [h0, h1) (None if it holds none) and the partial edges around them,
    so that a total reads hourly rollups for the middle and raw events only at the edges. A customer in a
    +05:30 timezone has a month starting at hh:30 UTC: its first and last half hours are edges."""
    start, end = check_range(start, end)
    first, last = ceil_hour(start), floor_hour(end)
    if first >= last:
        return None, [(start, end)]
    edges = [(a, b) for a, b in ((start, first), (last, end)) if a < b]
    return (first, last), edges
