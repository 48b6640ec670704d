"""Tape's side of the sim benchmark: one workload through `sim.run.SimRun`, journaled.

Market data streams from the cached Arrow IPC file one record batch at a time (as a
long sim run would read it), and every input is journaled (fsync "none", the default
compression), exactly as in any sim run; the journal is deleted afterwards and its size
reported. The simulated venue SIM has the common order latency (0.1 ms each way) and no
fees.

- W0: market data only.
- W1: signals precomputed from the data: at each decision row, a LIMIT signal at the
  touch (buy at the bid on even decisions, sell at the ask on odd ones) that replaces
  the previous one (`cancels` names it): the engine cancels the previous order first
  if it is still open, as the engine knows it, and sends nothing for it otherwise.
- W2: a MARKET signal at each decision row (buy on even decisions, sell on odd ones).
- callback: W1 decided by a per-tick strategy (`SimRun(strategy=...)`): `on_quote` is
  called for every quote row and returns the same replacing signal at the decision rows.

The engine runs compiled when `make native` has built this source (see engine/native.py),
else as pure Python; the result says which (`compiled`, and `engine_mode` in words).

Signals enter at the decision row's timestamp, after that row's quote (the runner's
order at equal times: market data, then signals).

Run: `python -m peers.tape_workloads --workload W1 --ticks 1000000 --cache DIR` (from the
repository root, with it and then `bench/` on PYTHONPATH); prints one JSON line.
"""

from __future__ import annotations

import contextlib
import mmap
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from engine import native
from engine.config import EngineConfig
from engine.messages import AssetClass, Instrument, OrderType, Side, Signal
from peers import common
from sim.config import VenueConfig
from sim.run import SimRun

STRATEGY, ACCOUNT = "bench", "ACC-1"


def instrument() -> Instrument:
    return Instrument(
        instrument=common.INSTRUMENT,
        asset_class=AssetClass.CRYPTO,
        currency="USD",
        price_precision=common.PRICE_PRECISION,
        size_precision=common.SIZE_PRECISION,
        tick_size=1,
        lot_size=1,
        min_qty=1,
        venue_symbols={common.VENUE: "BTC/USD"},
    )


def venues() -> tuple[VenueConfig, ...]:
    return (
        VenueConfig(
            name=common.VENUE, maker_fee_bps=0, taker_fee_bps=0, latency_ns=common.LATENCY_NS
        ),
    )


def _signal(sid: str, ts: int, **fields: Any) -> Signal:
    return Signal(
        ts_recv=ts,
        signal_id=sid,
        strategy=STRATEGY,
        account=ACCOUNT,
        instrument=common.INSTRUMENT,
        venue=common.VENUE,
        **fields,
    )


def w1_decision(k: int, ts: int, bid: int, ask: int) -> list[Signal]:
    """Decision k of W1: a limit at the touch replacing decision k-1's (canceled if open)."""
    side, price = (Side.BUY, bid) if k % 2 == 0 else (Side.SELL, ask)
    return [
        _signal(
            f"l{k}",
            ts,
            side=side,
            qty=common.ORDER_QTY,
            order_type=OrderType.LIMIT,
            price=price,
            signal_price=price,
            cancels=f"l{k - 1}" if k > 0 else None,
        )
    ]


def w2_decision(k: int, ts: int, bid: int, ask: int) -> list[Signal]:
    """Decision k of W2: a market order, buying on even decisions, selling on odd ones."""
    side, seen = (Side.BUY, ask) if k % 2 == 0 else (Side.SELL, bid)
    return [
        _signal(
            f"m{k}",
            ts,
            side=side,
            qty=common.ORDER_QTY,
            order_type=OrderType.MARKET,
            signal_price=seen,
        )
    ]


class EveryNthLimit:
    """W1 as a per-tick strategy: shown every quote, it acts on the decision rows."""

    def __init__(self) -> None:
        self.row = 0
        self.next_row = common.PHASE
        self.k = 0

    def on_quote(
        self, ts: int, key: int, bid: int, bid_size: int, ask: int, ask_size: int
    ) -> list[Signal] | None:
        row = self.row
        self.row = row + 1
        if row != self.next_row:
            return None
        self.next_row = row + common.EVERY
        k = self.k
        self.k = k + 1
        return w1_decision(k, ts, bid, ask)


_MADV_POPULATE_READ = 22  # Linux 5.14: fault a range in (8x cheaper than page by page)


def batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Stream the record batches of an Arrow IPC file, one at a time, zero-copy from a
    memory mapping of it, and drop the pages of batches two behind the current one from
    the process (MADV_DONTNEED: they stay in the page cache, and a late touch re-reads
    them), so that the peak RSS counts a few batches of input, not the whole file, as a
    streaming reader's would. Each batch's pages are mapped in one call as it is read."""
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    # not closed here: the run may hold the last batches after this generator ends; the
    # mapping goes when nothing refers to its buffers
    base = pa.py_buffer(mapped)
    reader = pa.ipc.open_file(pa.BufferReader(base))
    starts: list[int] = []
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        buffers = [b for c in batch.columns for b in c.buffers() if b is not None]
        start = min(b.address for b in buffers) - base.address
        end = max(b.address + b.size for b in buffers) - base.address
        starts.append(start)
        page = start // mmap.PAGESIZE * mmap.PAGESIZE
        with contextlib.suppress(OSError):  # a kernel before 5.14 faults pages one by one
            mapped.madvise(_MADV_POPULATE_READ, page, end - page)  # map the batch at once
        if i >= 2:
            mapped.madvise(mmap.MADV_DONTNEED, 0, starts[i - 1] // mmap.PAGESIZE * mmap.PAGESIZE)
        yield batch


def precomputed_signals(path: Path, workload: str) -> list[Signal]:
    """The signals of W1 or W2, read off the data at the decision rows."""
    decide = w1_decision if workload == "W1" else w2_decision
    out: list[Signal] = []
    base = 0
    next_row = common.PHASE
    k = 0
    for batch in batches(path):
        n = batch.num_rows
        if next_row < base + n:
            ts = batch.column("ts").to_numpy()
            bid = batch.column("bid_price").to_numpy()
            ask = batch.column("ask_price").to_numpy()
            while next_row < base + n:
                r = next_row - base
                out += decide(k, int(ts[r]), int(bid[r]), int(ask[r]))
                k += 1
                next_row += common.EVERY
        base += n
    return out


def run(workload: str, ticks: int, cache: Path) -> dict[str, Any]:
    path = common.arrow_path(cache, ticks)
    started = time.perf_counter()
    signals = precomputed_signals(path, workload) if workload in ("W1", "W2") else []
    strategy = EveryNthLimit() if workload == "callback" else None
    root = cache / "journals"
    run_id = f"bench-{workload}-{ticks}"
    shutil.rmtree(root / run_id, ignore_errors=True)
    config = EngineConfig(
        run_id=run_id,
        seed=common.SEED,
        instruments=(instrument(),),
        max_order_qty={"*": 1_000},
    )
    sim = SimRun(config, venues(), root, fsync="none", strategy=strategy)
    setup_s = time.perf_counter() - started
    t0, c0 = time.perf_counter(), time.process_time()
    result = sim.run(batches(path), signals)
    wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    run_dir = Path(result.run_dir)
    journal_bytes = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    shutil.rmtree(run_dir, ignore_errors=True)
    if result.market_rows != ticks:
        raise SystemExit(f"tape {workload}: ran {result.market_rows} market rows, not {ticks}")
    return {
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "setup_s": setup_s,
        "orders": result.orders,
        "fills": result.fills,
        "cancels": result.cancels,
        "signals": result.signals,
        "journal_entries": result.inputs + result.effects,
        "journal_mb": journal_bytes / 2**20,
        "undone": result.undone,
        "compiled": native.status().active,
        "engine_mode": native.status().describe(),
    }


if __name__ == "__main__":
    common.child_main("tape", run)
