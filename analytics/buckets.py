"""The fill model's bucket functions, vectorised as Polars expressions.

Invariants:
- Each expression computes, row by row, exactly what its pure counterpart in
  `engine.fillmodel` computes for one value (`touch_distance_ticks`, `distance_bucket`,
  `size_bucket`, `tod_bucket`): the same edges, the same floor division and modulo
  (Polars `//` and `%` on integers floor like Python's), the same None cases (a null
  in gives the pure function's answer for None). tests/analytics/test_fill_model.py
  holds them equal with Hypothesis.
- The edges are read from `engine.fillmodel` (`SIZE_EDGES_LOTS`, `NS_PER_HOUR`), never
  copied, so a change there changes both forms at once.
"""

from __future__ import annotations

import polars as pl

from engine.fillmodel import NS_PER_HOUR, SIZE_EDGES_LOTS

__all__ = ["distance_bucket", "size_bucket", "tod_bucket", "touch_distance_ticks"]


def touch_distance_ticks(
    side_is_buy: pl.Expr, price: pl.Expr, bid: pl.Expr, ask: pl.Expr, tick: pl.Expr
) -> pl.Expr:
    """Return ticks between a limit price and the same-side touch (-1 crosses), or null."""
    missing = price.is_null() | bid.is_null() | ask.is_null() | tick.is_null() | (tick <= 0)
    # A price inside the spread improves the touch: it rests at distance 0.
    buy = (
        pl.when(price >= ask)
        .then(pl.lit(-1, pl.Int64))
        .otherwise((bid - price).clip(lower_bound=0) // tick)
    )
    sell = (
        pl.when(price <= bid)
        .then(pl.lit(-1, pl.Int64))
        .otherwise((price - ask).clip(lower_bound=0) // tick)
    )
    return (
        pl.when(missing)
        .then(pl.lit(None, pl.Int64))
        .when(side_is_buy)
        .then(buy)
        .otherwise(sell)
        .cast(pl.Int64)
    )


def distance_bucket(ticks: pl.Expr) -> pl.Expr:
    """Bucket distances from the touch in ticks: null -2, < 0 -1, 0..2 as is, 3-5 3, else 6."""
    return (
        pl.when(ticks.is_null())
        .then(pl.lit(-2, pl.Int64))
        .when(ticks < 0)
        .then(pl.lit(-1, pl.Int64))
        .when(ticks <= 2)
        .then(ticks)
        .when(ticks <= 5)
        .then(pl.lit(3, pl.Int64))
        .otherwise(pl.lit(6, pl.Int64))
        .cast(pl.Int64)
    )


def size_bucket(qty: pl.Expr, lot_size: pl.Expr) -> pl.Expr:
    """Return the index of the size bucket of `qty` in lots (edges SIZE_EDGES_LOTS)."""
    lots = qty // pl.max_horizontal(lot_size.fill_null(1), pl.lit(1, pl.Int64))
    # The pure form keeps the highest index whose edge lots reaches, else 0.
    bucket: pl.Expr = pl.lit(0, pl.Int64)
    for i, edge in enumerate(SIZE_EDGES_LOTS):
        bucket = pl.when(lots >= edge).then(pl.lit(i, pl.Int64)).otherwise(bucket)
    return pl.when(lots.is_null()).then(pl.lit(None, pl.Int64)).otherwise(bucket).cast(pl.Int64)


def tod_bucket(ts_ns: pl.Expr) -> pl.Expr:
    """Return the UTC hour of day (0-23) of nanosecond timestamps."""
    return ((ts_ns // NS_PER_HOUR) % 24).cast(pl.Int64)
