"""Review of the session-5 sim speed work (4c5f409..7532873): one-key and quotes-only
fast paths (`MarketView.single_key`/`quotes_only`, slices as `KeyRows`), shared all-null
view columns, the loop stepping an event before row i without a search, and journal
groups ended with the market batch (`SIM_GROUP_END`)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

from engine.core import EngineConfig
from engine.journal import JournalReader
from engine.messages import (
    AssetClass,
    Instrument,
    OrderType,
    Side,
    Signal,
    TimeInForce,
)
from sim.market import MARKET_SCHEMA, MTYPE_QUOTE, MTYPE_TRADE
from sim.run import SimRun
from sim.venue import VenueConfig

INSTRUMENTS = tuple(
    Instrument(
        instrument=name,
        asset_class=AssetClass.CRYPTO,
        currency="USD",
        price_precision=2,
        size_precision=2,
        venue_symbols={"A": name, "B": name},
    )
    for name in ("X", "Y")
)
VENUES = (VenueConfig(name="A", latency_ns=3), VenueConfig(name="B", latency_ns=7))


def one_key_market(seed: int, rows: int, key: tuple[str, str], kinds: tuple[int, ...]) -> pa.Table:
    """A random market of one (instrument, venue): quotes, trades, book levels."""
    rng = random.Random(seed)
    mid, ts = 1_000, 1_000
    cols: dict[str, list[object]] = {name: [] for name in MARKET_SCHEMA.names}
    for _ in range(rows):
        ts += rng.choice((0, 1, 2, 5))
        mid += rng.choice((-2, -1, 0, 1, 2))
        mtype = rng.choice(kinds)
        row: dict[str, object] = dict.fromkeys(MARKET_SCHEMA.names)
        row.update(ts=ts, mtype=mtype, instrument=key[0], venue=key[1], ts_event=ts - 1)
        if mtype == MTYPE_QUOTE:
            row.update(
                bid_price=mid - 1,
                bid_size=rng.randint(1, 30),
                ask_price=mid + 1,
                ask_size=rng.randint(1, 30),
            )
        elif mtype == MTYPE_TRADE:
            row.update(price=mid + rng.choice((-1, 1)), qty=rng.randint(1, 20), side=None)
        else:
            row.update(
                side=rng.choice((0, 1)),
                price=mid + rng.randint(-5, 5),
                qty=rng.randint(0, 40),
                clear=rng.random() < 0.05,
            )
        for name, value in row.items():
            cols[name].append(value)
    return pa.table(cols, schema=MARKET_SCHEMA)


def limit_signals(seed: int, table: pa.Table, key: tuple[str, str]) -> list[Signal]:
    rng = random.Random(seed + 1)
    ts = table.column("ts").to_pylist()
    return [
        Signal(
            ts_recv=ts[i],
            signal_id=f"s{n}",
            strategy="p",
            account="ACC",
            instrument=key[0],
            venue=key[1],
            side=rng.choice(list(Side)),
            qty=rng.randint(1, 50),
            order_type=OrderType.LIMIT,
            price=1_000 + rng.randint(-4, 4),
            tif=TimeInForce.GTC,
        )
        for n, i in enumerate(range(3, len(ts), 9))
    ]


def run_entries(
    tmp: Path, table: pa.Table, sigs: list[Signal], chunk: int, fast: bool
) -> list[tuple[int | None, object]]:
    config = EngineConfig(run_id="r", instruments=INSTRUMENTS)
    result = SimRun(config, VENUES, tmp, fast=fast).run(table.to_batches(chunk), sigs)
    reader = JournalReader(Path(result.run_dir))
    assert reader.verify().ok
    return [(e.cause, e.msg) for e in reader.entries()]


@pytest.mark.parametrize(
    ("seed", "kinds", "chunk"),
    [
        (1, (0,), 13),  # quotes only: the quotes_only fast paths
        (2, (0, 0, 0, 1), 11),  # quotes and trades, L1
        (3, (0, 0, 0, 0, 1, 2), 7),  # with book rows: L2 keys, some quotes-only batches
        (4, (0, 2), 5),
    ],
)
def test_run_when_every_batch_has_one_key_then_fast_forward_equals_row_by_row(
    tmp_path: Path, seed: int, kinds: tuple[int, ...], chunk: int
) -> None:
    """Batches of one key take the slice fast paths (horizon and skip with `KeyRows`
    slices, quotes-only shortcuts, shared all-null view columns): a fast run journals
    exactly what a row-by-row run does."""
    key = ("X", "A") if seed % 2 else ("Y", "B")
    table = one_key_market(seed, 400, key, kinds)
    sigs = limit_signals(seed, table, key)
    fast = run_entries(tmp_path / "fast", table, sigs, chunk, True)
    slow = run_entries(tmp_path / "slow", table, sigs, chunk, False)
    assert fast == slow
    assert any(type(m).__name__ == "OrderFilled" for _, m in fast) or seed == 4


def test_run_when_events_land_on_row_timestamps_then_same_order_as_row_by_row(
    tmp_path: Path,
) -> None:
    """Signals and venue responses at exactly a row's ts and before it (the loop's
    no-search branch, `_step_event(best)`): the fast run orders them as the slow one."""
    key = ("X", "A")
    table = one_key_market(9, 300, key, (0, 0, 1))
    ts = table.column("ts").to_pylist()
    sigs = [
        Signal(
            ts_recv=ts[i] - (i % 2),  # at a row's ts, or just before it
            signal_id=f"e{i}",
            strategy="p",
            account="ACC",
            instrument="X",
            venue="A",
            side=Side.BUY if i % 4 else Side.SELL,
            qty=5,
            order_type=OrderType.LIMIT,
            price=1_000 + (i % 5) - 2,
            tif=TimeInForce.GTC,
        )
        for i in range(2, 300, 7)
    ]
    fast = run_entries(tmp_path / "fast", table, sigs, 17, True)
    slow = run_entries(tmp_path / "slow", table, sigs, 17, False)
    assert fast == slow
