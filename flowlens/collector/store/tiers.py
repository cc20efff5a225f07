"""Which storage tier answers which part of a time range: raw intervals, minute or hour rollups.

Each tier is valid over [horizon, watermark): the horizon is where retention last cut it, the
watermark how far rollups have been built (raw intervals have no watermark). A range is split
so that whole hours come from the hour tier, whole minutes from the minute tier and the
ragged ends from raw intervals. Rollup rows carry the start of their bucket, and a raw row
belongs to the bucket its start falls in, so the split gives exactly what raw rows would.

Before the raw horizon only rollups remain; a range reaching there is widened outwards to
whole minutes (or hours, before the minute horizon) instead of silently losing its edges.
Engine-independent: the DuckDB store and any later engine plan the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

RAW, MINUTE, HOUR = "raw", "minute", "hour"
GRANULARITY = {MINUTE: timedelta(minutes=1), HOUR: timedelta(hours=1)}

# Stand-ins for an open range; far enough apart to hold any data, close enough to stay valid
# after rounding to an hour.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
_EPOCH = EARLIEST


@dataclass(frozen=True, slots=True)
class TierState:
    """Where retention and rollups stand; None means "never cut" / "nothing rolled up"."""

    raw_horizon: datetime | None = None
    minute_horizon: datetime | None = None
    minute_watermark: datetime | None = None
    hour_horizon: datetime | None = None
    hour_watermark: datetime | None = None


@dataclass(frozen=True, slots=True)
class Piece:
    tier: str
    start: datetime
    end: datetime


def floor(t: datetime, step: timedelta) -> datetime:
    return _EPOCH + ((t - _EPOCH) // step) * step


def ceil(t: datetime, step: timedelta) -> datetime:
    return _EPOCH - ((_EPOCH - t) // step) * step


def widen(since: datetime, until: datetime, state: TierState) -> tuple[datetime, datetime]:
    """Round the ends of a range that lie where raw rows (or minute rollups) are gone."""

    def grain(t: datetime) -> timedelta | None:
        if state.raw_horizon is None or t >= state.raw_horizon:
            return None
        if state.minute_horizon is None or t >= state.minute_horizon:
            return GRANULARITY[MINUTE]
        return GRANULARITY[HOUR]

    g_since, g_until = grain(since), grain(until)
    return (floor(since, g_since) if g_since else since, ceil(until, g_until) if g_until else until)


def step_for(step: timedelta, since: datetime, state: TierState) -> timedelta:
    """A series step that the tiers still holding ``since`` answer exactly: a whole number of
    minutes before the raw horizon, of hours before the minute horizon."""
    if state.minute_horizon is not None and since < state.minute_horizon:
        needed = GRANULARITY[HOUR]
    elif state.raw_horizon is not None and since < state.raw_horizon:
        needed = GRANULARITY[MINUTE]
    else:
        return step
    return -(-step // needed) * needed


def plan(since: datetime, until: datetime, state: TierState, step: timedelta | None = None,
         rollups: bool = True) -> list[Piece]:
    """Pieces covering [since, until) (after widening), coarsest tier first where it fits.

    With ``step`` (a series), a rollup tier is used only if its buckets nest in the step's.
    """
    if not rollups:
        return [Piece(RAW, since, until)] if since < until else []
    since, until = widen(since, until, state)
    tiers = [(HOUR, state.hour_horizon, state.hour_watermark), (MINUTE, state.minute_horizon, state.minute_watermark)]
    usable = [t for t in tiers if step is None or step % GRANULARITY[t[0]] == timedelta(0)]
    return _split(since, until, usable)


def _split(a: datetime, b: datetime, tiers: list[tuple[str, datetime | None, datetime | None]]) -> list[Piece]:
    if a >= b:
        return []
    if not tiers:
        return [Piece(RAW, a, b)]
    (name, horizon, watermark), finer = tiers[0], tiers[1:]
    if watermark is None:
        return _split(a, b, finer)
    g = GRANULARITY[name]
    start = max(ceil(a, g), ceil(horizon, g) if horizon else ceil(a, g))
    end = min(floor(b, g), floor(watermark, g))
    if start >= end:
        return _split(a, b, finer)
    return [*_split(a, start, finer), Piece(name, start, end), *_split(end, b, finer)]
