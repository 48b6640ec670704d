"""A deterministic synthetic market: seed in, same market out.

Invariants:
- One latent mid per instrument follows a random walk in ticks, drawn from
  `numpy.random.default_rng(seed)`; nothing else is random and nothing reads a clock.
- Each venue quotes every instrument it lists around that mid with its own half spread
  (in ticks) and displayed size, so venues differ in liquidity but agree on value.
- The output is an Arrow table sorted by (ts, instrument, venue) with integer prices and
  sizes in instrument units: columns ts, instrument, venue, bid_price, bid_size,
  ask_price, ask_size.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa

from engine.messages import Instrument

QUOTE_SCHEMA = pa.schema(
    [
        ("ts", pa.int64()),
        ("instrument", pa.string()),
        ("venue", pa.string()),
        ("bid_price", pa.int64()),
        ("bid_size", pa.int64()),
        ("ask_price", pa.int64()),
        ("ask_size", pa.int64()),
    ]
)


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
                pa.table(
                    {
                        "ts": ts,
                        "instrument": pa.array([inst.instrument] * spec.ticks, pa.string()),
                        "venue": pa.array([vq.venue] * spec.ticks, pa.string()),
                        "bid_price": (mid_ticks - vq.half_spread_ticks) * tick,
                        "bid_size": bid_size.astype(np.int64),
                        "ask_price": (mid_ticks + vq.half_spread_ticks) * tick,
                        "ask_size": ask_size.astype(np.int64),
                    },
                    schema=QUOTE_SCHEMA,
                )
            )
    if not parts:
        return QUOTE_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    return table.sort_by([("ts", "ascending"), ("instrument", "ascending"), ("venue", "ascending")])
