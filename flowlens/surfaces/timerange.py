"""Time ranges as users type them: ``10m``, ``2h``, ``7d`` back from now, or ISO times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: use e.g. 30s, 10m, 2h, 7d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def time_range(since: str, until: str | None, now: datetime | None = None) -> tuple[datetime, datetime]:
    end = _instant(until) if until else (now or datetime.now(UTC))
    try:
        return end - timedelta(seconds=parse_duration(since)), end
    except ValueError:
        pass
    try:
        return _instant(since), end
    except ValueError:
        raise ValueError(f"since {since!r} is neither a duration (10m, 2h) nor an ISO time") from None
