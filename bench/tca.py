"""TCA benchmark: the per-order build and the by-venue aggregation over 1M and 10M fills.

Run `python bench/tca.py [--quick] [--keep DIR]`. Prints a table, then one JSON line with
the figures (the last line of output), at least `tca_1m_fills_s` and `tca_10m_fills_s`.

The journals are synthetic but real: written with `JournalWriter.append_columns` (the
journal's bulk path: the journal schema, lz4, hash chain, sealed segments of an
`NNNNNN.arrow` entries file and a `market/NNNNNN.arrow` market-data file, where the
quotes are), built column by column with numpy and pyarrow, never message by message.
Each order is a block of entries: two quotes (its venue and another), the signal, the
`SubmitOrder`, an ack (or, for 5% of orders, a reject), 0 to 8 fills and, when the
fills do not complete it, a cancel; three venues, three instruments, a random-walk mid,
one order every 50 ms of journal time. (The bulk path journals every row as an input:
the `SubmitOrder` rows have no `cause`, which TCA does not read.) The fill counts are
trimmed so a journal holds exactly 1M or 10M fills.

Timed: `load_tca` (scan the sealed segments with Polars, build the per-order and
per-fill tables: arrival mids, markouts, shortfall, latencies, buckets) plus
`aggregate(orders, ["venue"])` with DuckDB, and each alone. The baseline is the floor
of any analysis: a Polars scan of the same segments (both files) reading the same
columns (those each file has), counting rows by kind. Each figure is the best of the
repeats (the machine is shared with other work, so the best is the least disturbed
run); peak RSS is the process's high-water mark.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from analytics.tca import TCA_COLUMNS, aggregate, load_tca, scan_market
from engine.config import EngineConfig
from engine.journal import JournalWriter, sealed_segments
from engine.messages import (
    KIND_CODE,
    AssetClass,
    Instrument,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderType,
    QuoteTick,
    Side,
    Signal,
    SignalIntent,
    SubmitOrder,
    TimeInForce,
)
from engine.runner import new_manifest

VENUES = ("ALPHA", "BETA", "GAMMA")
INSTRUMENTS = ("BTC-USD", "ETH-USD", "SOL-USD")
START_MID = np.array([9_000_000, 300_000, 15_000], dtype=np.int64)
HALF_SPREAD = np.array([1, 2, 1], dtype=np.int64)  # ticks, per venue
LATENCY = np.array([2_000_000, 5_000_000, 500_000], dtype=np.int64)  # ns, per venue
START_NS = 1_767_225_600_000_000_000
ORDER_EVERY_NS = 50_000_000
CHUNK_ORDERS = 6_000
MAX_FILLS = 8

K_QUOTE, K_SIGNAL, K_SUBMIT = KIND_CODE[QuoteTick], KIND_CODE[Signal], KIND_CODE[SubmitOrder]
K_ACK, K_REJECT = KIND_CODE[OrderAccepted], KIND_CODE[OrderRejected]
K_FILL, K_CANCEL = KIND_CODE[OrderFilled], KIND_CODE[OrderCanceled]
# Enum columns hold member indices (codec: dictionary<int8, utf8> in definition order).
SIDE_CODE = np.array([list(Side).index(Side.BUY), list(Side).index(Side.SELL)], dtype=np.int8)
MARKET, LIMIT = list(OrderType).index(OrderType.MARKET), list(OrderType).index(OrderType.LIMIT)
GTC = list(TimeInForce).index(TimeInForce.GTC)
ORDER_INTENT = list(SignalIntent).index(SignalIntent.ORDER)


def instruments() -> tuple[Instrument, ...]:
    """The three instruments, listed on the three venues."""
    return tuple(
        Instrument(
            instrument=name,
            asset_class=AssetClass.CRYPTO,
            currency="USD",
            price_precision=2,
            size_precision=4,
            venue_symbols={v: name for v in VENUES},
        )
        for name in INSTRUMENTS
    )


def _strings(prefix: str, numbers: np.ndarray, valid: np.ndarray) -> pa.Array:
    """`prefix + str(n)` where valid, else null, without per-row Python."""
    text = pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")
    return pc.if_else(pa.array(valid), text, pa.scalar(None, pa.string()))


def _names(names: tuple[str, ...], index: np.ndarray, valid: np.ndarray) -> pa.Array:
    codes = pa.array(index.astype(np.int32), mask=~valid)
    return pa.DictionaryArray.from_arrays(codes, pa.array(names)).cast(pa.string())


def _ints(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), mask=~valid)


def _enum(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int8), mask=~valid)


def plan_orders(fills: int, seed: int) -> dict[str, np.ndarray]:
    """Draw every order's shape so that the fills add up to exactly `fills`."""
    rng = np.random.default_rng(seed)
    n = fills // 3 + 16
    k = rng.integers(0, MAX_FILLS + 1, size=n)
    rejected = rng.random(n) < 0.05
    k[rejected] = 0
    total = np.cumsum(k)
    last = int(np.searchsorted(total, fills))
    k = k[: last + 1].copy()
    rejected = rejected[: last + 1]
    k[last] -= int(total[last] - fills)
    n = last + 1
    extra = np.where(rng.random(n) < 0.7, 0, rng.integers(1, 5, size=n))
    return {
        "k": k,
        "rejected": rejected,
        "extra": extra,
        "venue": rng.integers(0, len(VENUES), size=n),
        "other": rng.integers(0, len(VENUES), size=n),
        "inst": rng.integers(0, len(INSTRUMENTS), size=n),
        "side": rng.integers(0, 2, size=n),
        "limit": rng.random(n) < 0.5,
        "lots": rng.integers(1, 2_000, size=n),
        "step": rng.integers(-2, 3, size=(n, len(INSTRUMENTS))),
        "slip": rng.integers(-1, 3, size=n),
    }


def chunk_columns(
    plan: dict[str, np.ndarray], a: int, b: int, mids: np.ndarray, run_id: str
) -> tuple:
    """Build the journal columns of orders [a, b); `mids` walks on (updated in place)."""
    k = plan["k"][a:b]
    rej = plan["rejected"][a:b]
    extra = plan["extra"][a:b]
    n = b - a
    oid = np.arange(a, b)
    cancel = ~rej & ((k == 0) | (extra > 0))
    rows_per = 5 + k + cancel.astype(np.int64)
    start = np.concatenate(([0], np.cumsum(rows_per)[:-1]))
    total = int(rows_per.sum())
    order = np.repeat(np.arange(n), rows_per)
    pos = np.arange(total) - start[order]
    kk = k[order]

    kind = np.full(total, K_FILL, dtype=np.int8)
    kind[pos < 2] = K_QUOTE
    kind[pos == 2] = K_SIGNAL
    kind[pos == 3] = K_SUBMIT
    kind[pos == 4] = np.where(rej[order], K_REJECT, K_ACK)[pos == 4]
    kind[(pos >= 5 + kk)] = K_CANCEL

    inst = plan["inst"][a:b]
    steps = plan["step"][a:b]
    walk = np.cumsum(steps, axis=0) + mids
    mids[:] = walk[-1]
    mid = walk[np.arange(n), inst]
    venue = plan["venue"][a:b]
    other = plan["other"][a:b]
    side = plan["side"][a:b]
    buy = side == 0
    sign = np.where(buy, 1, -1)
    half = HALF_SPREAD[venue]
    bid = mid - half
    ask = mid + half
    fill_qty = plan["lots"][a:b]
    qty = fill_qty * np.maximum(k + extra, 1)
    limit = plan["limit"][a:b]
    price = np.where(buy, ask, bid) + sign * plan["slip"][a:b]
    t0 = START_NS + oid * ORDER_EVERY_NS
    lat = LATENCY[venue]
    spacing = (ORDER_EVERY_NS - 2 * lat) // np.maximum(k + 1, 1)

    is_q, is_sig, is_sub = kind == K_QUOTE, kind == K_SIGNAL, kind == K_SUBMIT
    is_ack, is_rej, is_fill, is_cxl = (
        kind == K_ACK,
        kind == K_REJECT,
        kind == K_FILL,
        kind == K_CANCEL,
    )
    venue_events = is_ack | is_rej | is_fill | is_cxl
    fill_no = np.clip(pos - 4, 0, None)
    ts = t0[order] + np.select(
        [pos < 2, is_sig | is_sub, is_ack | is_rej, is_fill, is_cxl],
        [pos - 2, 0, lat[order], lat[order] + fill_no * spacing[order], ORDER_EVERY_NS - 3],
    )
    q_venue = np.where(pos == 0, venue[order], other[order])
    q_half = HALF_SPREAD[q_venue]
    o_venue_row = np.where(is_q, q_venue, venue[order])
    has_venue = is_q | is_sub | venue_events
    has_inst = is_q | is_sig | is_sub
    has_order = is_sub | venue_events
    has_side = is_sig | is_sub
    limit_row = limit[order]
    columns: dict[str, Any] = {
        "ts_recv": ts,
        "instrument": _names(INSTRUMENTS, inst[order], has_inst),
        "venue": _names(VENUES, o_venue_row, has_venue),
        "bid_price": _ints(mid[order] - q_half, is_q),
        "ask_price": _ints(mid[order] + q_half, is_q),
        "bid_size": _ints(np.full(total, 1_000), is_q),
        "ask_size": _ints(np.full(total, 1_000), is_q),
        "signal_id": _strings("S-", oid[order], is_sig | is_sub),
        "strategy": _names(("bench",), np.zeros(total, np.int64), is_sig | is_sub),
        "account": _names(("ACC",), np.zeros(total, np.int64), is_sig | is_sub),
        "intent": _enum(np.full(total, ORDER_INTENT), is_sig),
        "side": _enum(SIDE_CODE[side[order]], has_side),
        "order_type": _enum(np.where(limit_row, LIMIT, MARKET), has_side),
        "tif": _enum(np.full(total, GTC), has_side),
        "signal_price": _ints(mid[order], is_sig),
        "qty": _ints(np.where(is_fill, fill_qty[order], qty[order]), has_side | is_fill),
        "price": _ints(
            np.where(is_fill, price[order], np.where(buy, ask, bid)[order]),
            is_fill | (is_sub & limit_row),
        ),
        # engine order ids: f"{run_id}-{n}", n from 1 in the order sent (engine/ids.py)
        "order_id": _strings(f"{run_id}-", oid[order] + 1, has_order),
        "trade_id": _strings("T-", np.arange(total) + a * 16, is_fill),
        "fee": _ints(price[order] * fill_qty[order] * 3 // 10_000, is_fill),
        "reason": pc.if_else(pa.array(is_rej), "risk", pa.scalar(None, pa.string())),
        "retryable": pa.array(np.zeros(total, bool), mask=~is_rej),
    }
    return kind, columns, int(is_fill.sum())


def write_journal(root: Path, run_id: str, fills: int, seed: int = 7) -> tuple[Path, int, int]:
    """Write a synthetic run with exactly `fills` fills; return (run dir, entries, fills)."""
    config = EngineConfig(run_id=run_id, seed=seed, instruments=instruments())
    plan = plan_orders(fills, seed)
    mids = START_MID.copy()
    n = len(plan["k"])
    written = 0
    with JournalWriter(
        root, new_manifest(config, mode="bench"), fsync="none", batch_size=65_536
    ) as journal:
        for a in range(0, n, CHUNK_ORDERS):
            kind, columns, got = chunk_columns(plan, a, min(a + CHUNK_ORDERS, n), mids, run_id)
            journal.append_columns(pa.array(kind, pa.int8()), columns)
            written += got
        entries = journal.next_seq
    return root / run_id, entries, written


def segment_files(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """The sealed segments' entries files and market-data files."""
    segments, _ = sealed_segments(run_dir)
    return [e for e, _ in segments], [m for _, m in segments if m is not None]


def scan_floor(run_dir: Path) -> float:
    """Read the TCA columns of every segment with Polars (the entries files and the
    market-data files, which have fewer columns) and count rows by kind."""
    t = time.perf_counter()
    entries_files, market_files = segment_files(run_dir)
    entries = pl.scan_ipc(entries_files).select(list(TCA_COLUMNS))
    market = scan_market(market_files, entries.collect_schema())
    pl.concat([entries, market]).group_by("kind").agg(
        pl.len(), *(pl.col(c).null_count() for c in TCA_COLUMNS if c != "kind")
    ).collect()
    return time.perf_counter() - t


def time_tca(run_dir: Path) -> dict[str, Any]:
    """Time one per-order build and one by-venue aggregation."""
    gc.collect()
    t0 = time.perf_counter()
    tca = load_tca(run_dir)
    t1 = time.perf_counter()
    agg = aggregate(tca.orders, ["venue"])
    t2 = time.perf_counter()
    out = {
        "build_s": t1 - t0,
        "aggregate_s": t2 - t1,
        "total_s": t2 - t0,
        "orders": tca.orders.height,
        "fills": tca.fills.height,
        "venues": agg.height,
    }
    del tca, agg
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    """Build the journals, time TCA on them, print a table and a final JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k and 1M fills (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is shown)")
    parser.add_argument("--keep", type=Path, default=None, help="build the journals here, keep")
    args = parser.parse_args(argv)
    sizes = (
        (("100k", 100_000), ("1m", 1_000_000))
        if args.quick
        else (
            ("1m", 1_000_000),
            ("10m", 10_000_000),
        )
    )
    root = args.keep or Path(tempfile.mkdtemp(prefix="tape-bench-tca-"))
    console = Console(width=max(Console().width, 110))
    figures: dict[str, Any] = {"quick": args.quick, "repeats": args.repeats}
    table = Table(title=f"TCA over synthetic journals (best of {args.repeats}; baseline: scan)")
    for col in (
        "fills",
        "orders",
        "entries",
        "journal MB",
        "write s",
        "scan s (baseline)",
        "build s",
        "by-venue s",
        "TCA s",
        "ratio vs scan",
        "fills/s",
    ):
        table.add_column(col, justify="right")
    try:
        for label, fills in sizes:
            run_id = f"bench-{label}"
            run_dir = root / run_id
            t = time.perf_counter()
            if not (run_dir / "manifest.json").exists():
                run_dir, entries, got = write_journal(root, run_id, fills)
                assert got == fills, (got, fills)
            write_s = time.perf_counter() - t
            files = [p for paths in segment_files(run_dir) for p in paths]
            entries = sum(pl.scan_ipc(str(p)).select(pl.len()).collect().item() for p in files)
            size_mb = sum(p.stat().st_size for p in files) / 2**20
            floor = min(scan_floor(run_dir) for _ in range(args.repeats))
            runs = [time_tca(run_dir) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["total_s"])
            build = min(r["build_s"] for r in runs)
            agg = min(r["aggregate_s"] for r in runs)
            assert best["fills"] == fills, (best["fills"], fills)
            table.add_row(
                f"{fills:,}",
                f"{best['orders']:,}",
                f"{entries:,}",
                f"{size_mb:,.0f}",
                f"{write_s:.1f}",
                f"{floor:.2f}",
                f"{build:.2f}",
                f"{agg:.3f}",
                f"{best['total_s']:.2f}",
                f"{best['total_s'] / floor:.1f}",
                f"{fills / best['total_s']:,.0f}",
            )
            figures[f"tca_{label}_fills_s"] = round(best["total_s"], 3)
            figures[f"tca_{label}_build_s"] = round(build, 3)
            figures[f"tca_{label}_by_venue_s"] = round(agg, 4)
            figures[f"scan_{label}_fills_s"] = round(floor, 3)
            figures[f"tca_{label}_vs_scan"] = round(best["total_s"] / floor, 2)
            figures[f"entries_{label}"] = entries
            figures[f"orders_{label}"] = best["orders"]
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    figures["peak_rss_mb"] = round(peak_rss_mb())
    console.print(table)
    console.print(f"peak RSS {figures['peak_rss_mb']:,} MB (journal writing included)")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
