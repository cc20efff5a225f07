"""Splitting a time range over raw intervals, minute and hour rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flowlens.collector.store.tiers import HOUR, MINUTE, RAW, Piece, TierState, plan, step_for

H, M, S = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
D = datetime(2026, 11, 2, tzinfo=UTC)
ROLLED = TierState(minute_watermark=D + 20 * H + 30 * M, hour_watermark=D + 20 * H)


def test_whole_hours_minutes_and_ragged_ends():
    since, until = D + 10 * H + 7 * M + 32 * S, D + 13 * H + 2 * M + 10 * S
    assert plan(since, until, ROLLED) == [
        Piece(RAW, since, D + 10 * H + 8 * M),
        Piece(MINUTE, D + 10 * H + 8 * M, D + 11 * H),
        Piece(HOUR, D + 11 * H, D + 13 * H),
        Piece(MINUTE, D + 13 * H, D + 13 * H + 2 * M),
        Piece(RAW, D + 13 * H + 2 * M, until),
    ]


def test_rollups_only_below_their_watermarks():
    since, until = D + 19 * H + 30 * M, D + 21 * H
    # 19:00-20:00 is in the hour tier, but the range starts at 19:30; minutes go up to 20:30.
    assert plan(since, until, ROLLED) == [Piece(MINUTE, since, D + 20 * H + 30 * M),
                                          Piece(RAW, D + 20 * H + 30 * M, until)]


def test_nothing_rolled_up_or_rollups_off_means_raw():
    since, until = D, D + 5 * H
    assert plan(since, until, TierState()) == [Piece(RAW, since, until)]
    assert plan(since, until, ROLLED, rollups=False) == [Piece(RAW, since, until)]


def test_a_series_step_uses_only_rollups_that_nest_in_it():
    since, until = D + 10 * H, D + 12 * H
    assert plan(since, until, ROLLED, step=5 * M) == [Piece(MINUTE, since, until)]
    assert plan(since, until, ROLLED, step=7 * S) == [Piece(RAW, since, until)]
    assert plan(since, until, ROLLED, step=2 * H) == [Piece(HOUR, since, until)]


def test_ends_before_the_raw_horizon_widen_to_what_is_left():
    state = TierState(raw_horizon=D + 10 * H, minute_horizon=D + 5 * H, minute_watermark=D + 20 * H,
                      hour_horizon=D, hour_watermark=D + 20 * H)
    # 09:59:30 is gone from raw: the range starts at 09:59; 04:10:05 only has hours left.
    assert plan(D + 9 * H + 59 * M + 30 * S, D + 10 * H + 5 * S, state) == [
        Piece(MINUTE, D + 9 * H + 59 * M, D + 10 * H), Piece(RAW, D + 10 * H, D + 10 * H + 5 * S)]
    assert plan(D + 4 * H + 10 * M + 5 * S, D + 6 * H, state) == [Piece(HOUR, D + 4 * H, D + 6 * H)]
    assert step_for(5 * S, D + 9 * H, state) == M
    assert step_for(90 * S, D + 4 * H, state) == H
    assert step_for(5 * S, D + 11 * H, state) == 5 * S
