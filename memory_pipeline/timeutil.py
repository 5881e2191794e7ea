"""Times as the stores keep them: naive UTC.

LanceDB and Parquet timestamps carry no zone, and exports mix zones (ChatGPT epochs, Telegram local
times with an offset, naive strings). Every stage turns a time into naive UTC through :func:`naive_utc`
before storing or comparing it: dropping an offset without converting first shifts the moment by hours.
"""

from __future__ import annotations

from datetime import UTC, datetime


def naive_utc(value: datetime | None) -> datetime | None:
    """The same moment in UTC without a zone; a naive time is taken as UTC already, None stays None."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)
