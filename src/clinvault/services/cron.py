"""Cron expressions in a time zone: validation and fire times, correct across DST changes.

croniter walks the calendar on *naive wall-clock* times of the schedule's zone (pure
calendar arithmetic, no offsets involved); each wall-clock time is then placed in the zone
with :mod:`zoneinfo` and converted to UTC, which is what the catalog stores. That gives
the classic cron rules at daylight-saving changes, stated once here:

* a wall-clock time that does not exist (spring forward, e.g. 02:30 in Europe/Berlin on the
  last Sunday of March) fires once, shifted forward by the gap (03:30 local);
* a wall-clock time that happens twice (fall back, 02:30 on the last Sunday of October)
  fires once, at its first occurrence;

so a daily schedule fires exactly once every local day. Only the standard five fields
(minute hour day-of-month month day-of-week) and the ``@daily``-style macros are accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter  # type: ignore[import-untyped]

from clinvault.errors import InvalidInputError

MACROS: Final = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
MAX_EXPRESSION: Final = 255
# Bounds every walk over fire times (a fall-back hour can repeat up to 60 candidates).
_MAX_STEPS: Final = 100_000
# Longer than any daylight-saving gap in the tz database (at most 2 hours).
_LOOK_BACK: Final = timedelta(hours=3)


def check_expression(expression: str) -> str:
    """``expression`` normalized (single spaces), or :class:`InvalidInputError`."""
    text = " ".join(expression.split())
    if not text or len(text) > MAX_EXPRESSION:
        raise InvalidInputError(f"cron expression must be 1 to {MAX_EXPRESSION} characters")
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise InvalidInputError(
                f"unknown cron macro {text!r}: use one of {', '.join(sorted(MACROS))}"
            )
        text = text.lower()
    elif len(text.split(" ")) != 5:
        raise InvalidInputError(
            f"cron expression {text!r} must have 5 fields: minute hour day-of-month month "
            "day-of-week"
        )
    if not croniter.is_valid(text):
        raise InvalidInputError(f"invalid cron expression {text!r}")
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except (CroniterError, ValueError):
        raise InvalidInputError(f"cron expression {text!r} never fires") from None
    return text


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Berlin``, ``UTC``), or InvalidInputError."""
    text = name.strip()
    if not text or len(text) > 64:
        raise InvalidInputError("time zone must be an IANA name such as Europe/Berlin or UTC")
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInputError(
            f"unknown time zone {text!r}: use an IANA name such as Europe/Berlin or UTC"
        ) from None


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("fire times are computed from aware datetimes only")
    return value.astimezone(UTC)


def next_fire(expression: str, tz: ZoneInfo | str, after: datetime) -> datetime:
    """The first fire time strictly after ``after``, as an aware UTC datetime."""
    return next_fires(expression, tz, after, 1)[0]


def next_fires(expression: str, tz: ZoneInfo | str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``, ascending, in UTC."""
    found: list[datetime] = []
    if count <= 0:
        return found
    for instant in _walk(expression, tz, after):
        found.append(instant)
        if len(found) >= count:
            return found
    raise InvalidInputError(f"cron expression {expression!r} has no further fire time")


def fires_between(
    expression: str, tz: ZoneInfo | str, after: datetime, until: datetime, limit: int = 1000
) -> int:
    """How many fire times fall in ``(after, until]``, counted up to ``limit``."""
    end = _aware(until)
    count = 0
    for instant in _walk(expression, tz, after):
        if instant > end or count >= limit:
            break
        count += 1
    return count


def _walk(expression: str, tz: ZoneInfo | str, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after ``after``, ascending, in UTC (a bounded walk)."""
    zone_info = zone(tz) if isinstance(tz, str) else tz
    start = _aware(after)
    # The walk starts a few hours of wall-clock time back: a wall-clock time skipped by a
    # spring-forward gap is shifted past the gap, so it can come *after* ``start`` although
    # its wall-clock reading is before it. The strict comparison drops what is not after.
    wall = (start - _LOOK_BACK).astimezone(zone_info).replace(tzinfo=None)
    walker = croniter(expression, wall.replace(second=0, microsecond=0))
    last = start
    for _ in range(_MAX_STEPS):
        try:
            candidate: datetime = walker.get_next(datetime)
        except (CroniterError, ValueError):
            return
        instant = candidate.replace(tzinfo=zone_info, fold=0).astimezone(UTC)
        if instant > last:
            yield instant
            last = instant
