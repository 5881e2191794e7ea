"""Time spans for recall: "last week", "два месяца назад", "2024-03-01" -> a [since, until) range.

dateparser resolves the expression (Russian and English, offline); this module only finds the
candidate phrase in a query, so a number like "3 часа 30 минут" in a question about pace is not
taken for a date, and widens dateparser's point in time to the period it names: "два месяца
назад" is the whole month two months back, "на прошлой неделе" Monday to Sunday of last week.
Bounds are naive UTC, like every stored timestamp; the period is cut in the configured time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from memory_pipeline.errors import SearchError
from memory_pipeline.timeutil import naive_utc

_NUMBER_RU = r"(?:\d+|один|одну|два|две|три|четыре|пять|шесть|семь|восемь|девять|десять|полгода)"
_NUMBER_EN = r"(?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten)"
_RELATIVE = re.compile(
    rf"""(?ix)(?<!\w)(?:
        (?:{_NUMBER_RU}\s+)?(?:дн(?:я|ей)|день|недел[юиь]|месяц(?:а|ев)?|год(?:а)?|лет)\s+назад
      | полгода\s+назад
      | (?:на\s+)?(?:прошлой|позапрошлой|этой)\s+неделе
      | (?:в\s+)?(?:прошлом|позапрошлом|этом)\s+(?:месяце|году)
      | позавчера | вчера | сегодня
      | {_NUMBER_EN}\s+(?:days?|weeks?|months?|years?)\s+ago
      | (?:last|this|previous)\s+(?:week|month|year)
      | yesterday | today
    )(?!\w)""",
    re.UNICODE,
)


@dataclass(frozen=True)
class TimeSpan:
    """[since, until) in naive UTC; either end may be open. ``phrase`` is what named it, if a phrase did."""

    since: datetime | None
    until: datetime | None
    phrase: str = ""

    def where(self) -> str:
        """The span as a LanceDB (DataFusion SQL) filter on ``created_at``."""
        parts = []
        if self.since is not None:
            parts.append(f"created_at >= timestamp '{self.since:%Y-%m-%d %H:%M:%S}'")
        if self.until is not None:
            parts.append(f"created_at < timestamp '{self.until:%Y-%m-%d %H:%M:%S}'")
        return " AND ".join(parts)

    def contains(self, when: datetime | None) -> bool:
        if when is None:
            return False
        return (self.since is None or when >= self.since) and (self.until is None or when < self.until)


def _parser(now: datetime):
    from dateparser.date import DateDataParser

    return DateDataParser(
        languages=["ru", "en"],
        settings={"RELATIVE_BASE": now, "PREFER_DATES_FROM": "past", "RETURN_AS_TIMEZONE_AWARE": False},
    )


def _period(start: datetime, period: str) -> tuple[datetime, datetime]:
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    if period == "month":
        first = day.replace(day=1)
        return first, (first + timedelta(days=32)).replace(day=1)
    if period == "year":
        first = day.replace(month=1, day=1)
        return first, first.replace(year=first.year + 1)
    return day, day + timedelta(days=1)


def _to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    return naive_utc(local.replace(tzinfo=zone))


def _local_now(now: datetime | None, zone: ZoneInfo) -> datetime:
    now = now or datetime.now(UTC).replace(tzinfo=None)
    return now.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


def resolve(text: str, *, now: datetime | None = None, timezone: str = "UTC") -> TimeSpan | None:
    """A date ("2024-03-01", "март 2024") or a relative expression as the period it names; None if none."""
    zone = ZoneInfo(timezone)
    local_now = _local_now(now, zone)
    data = _parser(local_now).get_date_data(text.strip())
    if data is None or data.date_obj is None:
        return None
    start, end = _period(data.date_obj.replace(tzinfo=None), data.period or "day")
    return TimeSpan(_to_utc(start, zone), _to_utc(end, zone), text.strip())


def find_in_query(query: str, *, now: datetime | None = None, timezone: str = "UTC") -> tuple[str, TimeSpan] | None:
    """(the query without the phrase, its span) when the query names a relative time span."""
    match = _RELATIVE.search(query)
    if match is None:
        return None
    span = resolve(match.group(0), now=now, timezone=timezone)
    if span is None:
        return None
    rest = " ".join((query[: match.start()] + " " + query[match.end() :]).split())
    return rest or query, span


def bounds(
    since: str | datetime | None, until: str | datetime | None, *, now: datetime | None = None, timezone: str = "UTC"
) -> TimeSpan | None:
    """Explicit since/until (ISO dates, datetimes, or expressions like "last week") as one span.

    ``since`` takes the start of the period it names, ``until`` its end, so since="last month"
    until="last month" is the whole of last month.
    """
    if since is None and until is None:
        return None
    start = _bound(since, "since", now, timezone, end=False)
    stop = _bound(until, "until", now, timezone, end=True)
    if start is not None and stop is not None and start >= stop:
        raise SearchError(f"since ({start:%Y-%m-%d %H:%M}) must be before until ({stop:%Y-%m-%d %H:%M})")
    return TimeSpan(start, stop)


def _bound(
    value: str | datetime | None, name: str, now: datetime | None, timezone: str, *, end: bool
) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return naive_utc(value)
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo:
            return naive_utc(parsed)
        if end and len(value.strip()) <= 10:  # a bare date as "until" includes that day
            parsed += timedelta(days=1)
        return _to_utc(parsed, ZoneInfo(timezone))
    except ValueError:
        pass
    span = resolve(value, now=now, timezone=timezone)
    if span is None:
        raise SearchError(
            f"{name}: cannot read {value!r} as a date "
            "(use 2024-03-01 or an expression like 'last week', 'два месяца назад')"
        )
    return span.until if end else span.since
