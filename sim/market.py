"""Market data inside a sim run, and a deterministic synthetic market generator.

Market batches (`MARKET_SCHEMA`) are the one internal form of market data: loaders turn
files into it, the generator writes it, the sim runner and venues read it. Integer
prices and sizes in instrument units; `mtype` says what a row is:
- QUOTE (0): bid_price, bid_size, ask_price, ask_size (a missing side: null price)
- TRADE (1): price, qty, side = aggressor (0 buy, 1 sell, null unknown)
- BOOK  (2): one L2 level: side (0 bid, 1 ask), price, qty (0 removes); clear = a
  snapshot starts (drop the book, then apply this level)
Rows are sorted by `ts` (the time the row reaches us: the engine's `ts_recv`); rows with
equal `ts` keep file order. `ts_event` is the source's own time, when it gives one.

`MarketView` is the numpy view of one batch the runner and venues compute on: nulls
become `NULL` (int64 min) in price/size columns, -1 in `side`; `key` numbers each
(instrument, venue) pair in the run.

Invariants of the generator:
- One latent mid per instrument follows a random walk in ticks, drawn from
  `numpy.random.default_rng(seed)`; nothing else is random and nothing reads a clock.
- Each venue quotes every instrument it lists around that mid with its own half spread
  (in ticks) and displayed size, so venues differ in liquidity but agree on value.
- The output is a MARKET_SCHEMA table of quote rows sorted by (ts, instrument, venue).
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec
import numpy as np
import pyarrow as pa

from engine.messages import Instrument

MTYPE_QUOTE, MTYPE_TRADE, MTYPE_BOOK = 0, 1, 2
NULL = np.iinfo(np.int64).min

MARKET_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("mtype", pa.int8(), nullable=False),
        pa.field("instrument", pa.string(), nullable=False),
        pa.field("venue", pa.string(), nullable=False),
        ("bid_price", pa.int64()),
        ("bid_size", pa.int64()),
        ("ask_price", pa.int64()),
        ("ask_size", pa.int64()),
        ("price", pa.int64()),
        ("qty", pa.int64()),
        ("side", pa.int8()),
        ("clear", pa.bool_()),
        ("ts_event", pa.int64()),
    ]
)


class MarketView(NamedTuple):
    """Numpy columns of one market batch (see the module docstring for nulls)."""

    ts: np.ndarray
    mtype: np.ndarray
    key: np.ndarray  # int32 index into the run's (instrument, venue) keys
    bid_price: np.ndarray
    bid_size: np.ndarray
    ask_price: np.ndarray
    ask_size: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    side: np.ndarray
    clear: np.ndarray
    ts_event: np.ndarray
    single_key: int = -1  # the key of every row when the batch has one, else -1
    quotes_only: bool = False  # every row is a quote


class VenueQuoting(msgspec.Struct, frozen=True, kw_only=True):
    """How one venue quotes: half spread in ticks and mean displayed size in lots."""

    venue: str
    half_spread_ticks: int = 1
    mean_size_lots: int = 10


class MarketSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to generate: start time, tick count and spacing, start mids, volatility."""

    start_ns: int
    ticks: int
    interval_ns: int = 100_000_000
    start_mid: dict[str, int]  # instrument -> mid in price units
    vol_ticks: float = 1.0  # std dev of the mid's step, in ticks


def quote_table(
    ts: np.ndarray,
    instrument: str,
    venue: str,
    bid_price: np.ndarray,
    bid_size: np.ndarray,
    ask_price: np.ndarray,
    ask_size: np.ndarray,
) -> pa.Table:
    """Build a MARKET_SCHEMA table of quote rows of one instrument on one venue."""
    n = len(ts)
    return pa.table(
        {
            "ts": pa.array(ts, pa.int64()),
            "mtype": pa.array(np.full(n, MTYPE_QUOTE, dtype=np.int8)),
            "instrument": pa.array([instrument] * n, pa.string()),
            "venue": pa.array([venue] * n, pa.string()),
            "bid_price": pa.array(bid_price, pa.int64()),
            "bid_size": pa.array(bid_size, pa.int64()),
            "ask_price": pa.array(ask_price, pa.int64()),
            "ask_size": pa.array(ask_size, pa.int64()),
            "price": pa.nulls(n, pa.int64()),
            "qty": pa.nulls(n, pa.int64()),
            "side": pa.nulls(n, pa.int8()),
            "clear": pa.nulls(n, pa.bool_()),
            "ts_event": pa.array(ts, pa.int64()),
        },
        schema=MARKET_SCHEMA,
    )


def generate_quotes(
    spec: MarketSpec,
    instruments: tuple[Instrument, ...],
    venues: tuple[VenueQuoting, ...],
    seed: int,
) -> pa.Table:
    """Generate the quote stream of every (instrument, venue) pair, sorted by time."""
    rng = np.random.default_rng(seed)
    ts = spec.start_ns + np.arange(spec.ticks, dtype=np.int64) * spec.interval_ns
    parts: list[pa.Table] = []
    for inst in instruments:
        if inst.instrument not in spec.start_mid:
            raise ValueError(
                f"market spec: start_mid has no entry for instrument {inst.instrument!r}"
            )
        tick = inst.tick_size
        steps = np.rint(rng.normal(0.0, spec.vol_ticks, spec.ticks)).astype(np.int64)
        mid_ticks = spec.start_mid[inst.instrument] // tick + np.cumsum(steps)
        mid_ticks = np.maximum(mid_ticks, 10)
        for vq in venues:
            if vq.venue not in inst.venue_symbols:
                continue
            lot = inst.lot_size
            bid_size = (rng.poisson(vq.mean_size_lots, spec.ticks) + 1) * lot
            ask_size = (rng.poisson(vq.mean_size_lots, spec.ticks) + 1) * lot
            parts.append(
                quote_table(
                    ts,
                    inst.instrument,
                    vq.venue,
                    (mid_ticks - vq.half_spread_ticks) * tick,
                    bid_size.astype(np.int64),
                    (mid_ticks + vq.half_spread_ticks) * tick,
                    ask_size.astype(np.int64),
                )
            )
    if not parts:
        return MARKET_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    return table.sort_by([("ts", "ascending"), ("instrument", "ascending"), ("venue", "ascending")])
