"""What every engine's workload shares: the synthetic market, its cache files, the order
schedule and the one-JSON-line result of a child process.

The market: one instrument (BTC-USD on venue SIM), `ticks` quotes 1 ms apart. The mid
follows a random walk in price ticks (each step `rint(normal(0, 1))`, seeded numpy); the
bid is the mid and the ask one tick above it (a one-tick spread, always); displayed sizes
are `poisson(5) + 1` lots on each side, drawn independently per quote. Prices have 2
decimals (tick 0.01 USD), sizes 3 (lot 0.001 BTC); every order is one lot, so it always
fits within the displayed size and fills whole at the touch on every engine.

The schedule: a decision at every 1,000th tick, on rows 499, 1499, 2499, ... (0-based),
so that the last order still has 500 ticks of data after it on every engine. Decision k
(0-based) buys when k is even and sells when k is odd: a W1 limit order rests at the
touch of its side (a buy at the bid, a sell at the ask); a W2 market order takes the
other side.

Cache files (written once per size and seed, reused by later runs):
- `quotes-N-sSEED-vV.arrow`: an Arrow IPC file in `sim.market.MARKET_SCHEMA`
  (integer units, mtype 0 = quote), in batches of `BATCH_ROWS` rows: what Tape reads;
  the NautilusTrader child builds its `QuoteTick` objects from the same file.
- `hbt-N-sSEED-vV.npz`: hftbacktest's own event array (`event_dtype`), loaded by
  `BacktestAsset.data([path])`. hftbacktest's exchange and local processors build the
  book from depth events, so each quote becomes its L1 book: when the touch moves, the
  old bid and ask levels are removed (qty 0) and the new ones set; otherwise the two
  levels get their new sizes. All events of a quote share its timestamp (no feed
  latency), so `wait_next_feed` returns once per quote.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sim.market import MARKET_SCHEMA, MTYPE_QUOTE

VERSION = 1  # bump when the generator or a file format changes: old cache files are ignored
SEED = 20260101
START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
SPACING_NS = 1_000_000  # 1 ms between quotes
START_MID = 5_000_000  # 50,000.00 USD in price units (ticks of 0.01)
PRICE_PRECISION = 2
SIZE_PRECISION = 3
MEAN_SIZE_LOTS = 5
ORDER_QTY = 1  # lots: one lot always fits in the displayed size
EVERY = 1_000
PHASE = 499  # decisions on rows PHASE, PHASE + EVERY, ...
LATENCY_NS = 100_000  # order entry and response, one way: 0.1 ms, under the 1 ms spacing
BATCH_ROWS = 65_536
INSTRUMENT, VENUE = "BTC-USD", "SIM"

WORKLOADS = ("W0", "W1", "W2", "callback", "subscribe")


def generate(ticks: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """The quote stream as int64 numpy columns: ts, bid, ask, bid_size, ask_size."""
    rng = np.random.default_rng(seed)
    steps = np.rint(rng.normal(0.0, 1.0, ticks)).astype(np.int64)
    mid = START_MID + np.cumsum(steps)
    if mid.min() < 100:
        raise ValueError("random walk left the positive price range; change the seed")
    return {
        "ts": START_NS + np.arange(ticks, dtype=np.int64) * SPACING_NS,
        "bid": mid,
        "ask": mid + 1,
        "bid_size": (rng.poisson(MEAN_SIZE_LOTS, ticks) + 1).astype(np.int64),
        "ask_size": (rng.poisson(MEAN_SIZE_LOTS, ticks) + 1).astype(np.int64),
    }


def decision_rows(ticks: int) -> np.ndarray:
    """Rows (0-based) at which a workload acts: every EVERY-th, starting at PHASE."""
    return np.arange(PHASE, ticks, EVERY, dtype=np.int64)


def arrow_path(cache: Path, ticks: int, seed: int = SEED) -> Path:
    return cache / f"quotes-{ticks}-s{seed}-v{VERSION}.arrow"


def hbt_path(cache: Path, ticks: int, seed: int = SEED) -> Path:
    return cache / f"hbt-{ticks}-s{seed}-v{VERSION}.npz"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_arrow(path: Path, data: dict[str, np.ndarray]) -> None:
    """Write the quotes as an Arrow IPC file in MARKET_SCHEMA, BATCH_ROWS rows a batch."""
    n = len(data["ts"])
    inst = pa.array([INSTRUMENT], pa.string())
    venue = pa.array([VENUE], pa.string())
    tmp = _tmp(path)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, MARKET_SCHEMA) as writer:
        for a in range(0, n, BATCH_ROWS):
            b = min(n, a + BATCH_ROWS)
            m = b - a
            zeros = np.zeros(m, dtype=np.int32)
            ts = data["ts"][a:b]
            writer.write_batch(
                pa.record_batch(
                    [
                        pa.array(ts, pa.int64()),
                        pa.array(np.full(m, MTYPE_QUOTE, dtype=np.int8)),
                        inst.take(zeros),
                        venue.take(zeros),
                        pa.array(data["bid"][a:b], pa.int64()),
                        pa.array(data["bid_size"][a:b], pa.int64()),
                        pa.array(data["ask"][a:b], pa.int64()),
                        pa.array(data["ask_size"][a:b], pa.int64()),
                        pa.nulls(m, pa.int64()),
                        pa.nulls(m, pa.int64()),
                        pa.nulls(m, pa.int8()),
                        pa.nulls(m, pa.bool_()),
                        pa.array(ts, pa.int64()),
                    ],
                    schema=MARKET_SCHEMA,
                )
            )
    tmp.replace(path)


def hbt_events(data: dict[str, np.ndarray]) -> np.ndarray:
    """hftbacktest depth events of the quotes (see the module docstring)."""
    from hftbacktest import BUY_EVENT, DEPTH_EVENT, EXCH_EVENT, LOCAL_EVENT, SELL_EVENT
    from hftbacktest.types import event_dtype

    bid, ask = data["bid"], data["ask"]
    n = len(bid)
    moved = np.zeros(n, dtype=bool)
    moved[1:] = (bid[1:] != bid[:-1]) | (ask[1:] != ask[:-1])
    per = 2 + 2 * moved.astype(np.int64)
    start = np.concatenate([[0], np.cumsum(per)[:-1]])
    events = np.zeros(int(per.sum()), dtype=event_dtype)
    flags = EXCH_EVENT | LOCAL_EVENT | DEPTH_EVENT
    tick = 10.0**-PRICE_PRECISION
    lot = 10.0**-SIZE_PRECISION
    rows = np.flatnonzero(moved)
    at = start[rows]  # remove the old touch levels first
    events["ev"][at] = flags | BUY_EVENT
    events["px"][at] = bid[rows - 1] * tick
    events["ev"][at + 1] = flags | SELL_EVENT
    events["px"][at + 1] = ask[rows - 1] * tick
    at = start + 2 * moved  # then set the new touch
    events["ev"][at] = flags | BUY_EVENT
    events["px"][at] = bid * tick
    events["qty"][at] = data["bid_size"] * lot
    events["ev"][at + 1] = flags | SELL_EVENT
    events["px"][at + 1] = ask * tick
    events["qty"][at + 1] = data["ask_size"] * lot
    ts = np.repeat(data["ts"], per)
    events["exch_ts"] = ts
    events["local_ts"] = ts
    return events


def write_hbt(path: Path, data: dict[str, np.ndarray]) -> None:
    tmp = _tmp(path).with_suffix(".npz")
    np.savez(tmp, data=hbt_events(data))
    tmp.replace(path)


def ensure_cache(cache: Path, ticks: int, *, hbt: bool, seed: int = SEED) -> list[Path]:
    """Write the missing cache files of `ticks` quotes; return the files written."""
    cache.mkdir(parents=True, exist_ok=True)
    wanted = [arrow_path(cache, ticks, seed)] + ([hbt_path(cache, ticks, seed)] if hbt else [])
    missing = [p for p in wanted if not p.exists()]
    if not missing:
        return []
    data = generate(ticks, seed)
    for path in missing:
        if path.suffix == ".arrow":
            write_arrow(path, data)
        else:
            write_hbt(path, data)
    return missing


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """Read the quote columns of a cached Arrow file back into int64 numpy arrays."""
    with pa.OSFile(str(path), "rb") as source:
        table = pa.ipc.open_file(source).read_all()
    names = {"ts": "ts", "bid": "bid_price", "ask": "ask_price"}
    names |= {"bid_size": "bid_size", "ask_size": "ask_size"}
    return {k: table.column(v).to_numpy() for k, v in names.items()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux, `VmHWM` of /proc/self/status: the high-water mark of this program's own
    address space. `ru_maxrss` would do elsewhere, but on Linux it also keeps the peak of
    the address space the process had before `exec`, that is, its parent's at the fork:
    a child of a large parent would report at least the parent's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_main(engine: str, run: Callable[[str, int, Path], dict[str, Any]]) -> None:
    """Parse a child's arguments, run one workload, print its result as one JSON line."""
    parser = argparse.ArgumentParser(description=f"one {engine} workload of bench/sim.py")
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--ticks", type=int, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()
    result = run(args.workload, args.ticks, args.cache)
    wall = result["wall_s"]
    line = {
        "engine": engine,
        "workload": args.workload,
        "ticks": args.ticks,
        "ticks_per_s": args.ticks / wall if wall > 0 else 0.0,
        "peak_rss_mb": peak_rss_mb(),
        **result,
    }
    sys.stdout.flush()
    print(json.dumps(line, sort_keys=True), flush=True)
