"""Journal benchmarks: append throughput against raw pyarrow, and replay-verify throughput.

Run `python bench/journal.py [--quick]`. Prints a table, then one JSON line with the
figures (the last line of output).

Append: a realistic entry mix (mostly quotes, some trades, signals, orders and venue
events, with effects carrying their cause) appended to a `JournalWriter` with
fsync="none" in a temporary directory, at batch sizes 1, 64 and 4096 (and 4096 with lz4
compression). "tape /s" times the appends and a final flush, including any size
rotations (sealed in the background); "+close /s" adds the final seal. The baseline,
"raw pyarrow", is the same entries already transposed into Python column lists of the
journal schema, converted with `pa.array(col, type)` per column and written with
`pa.ipc.new_stream` (uncompressed) at the same batch size: no message transposition, no
checks, no hashing, no sealing. Runs alternate tape and baseline; each figure is the
best of a few repeats.

Bulk append (the sim runner's path): one instrument's quotes as columns, turned into
`codec.Rows` once per 65,536 rows and appended in slices (`append_rows`) between the
entries of an order (signal, order, ack, fill) every 1,000th quote, into 65,536-entry
lz4 batches; "tape /s" includes the close (the seal). Against what bounds it: the same
batches, already assembled, written alone by pyarrow's IPC stream writer with lz4
("IPC write /s"), and the hash chain over them alone ("hash /s"): no journal can
append faster than these two together allow ("floor /s").

Replay-verify: a sim run (the demo's three venues and three instruments) is journaled
with the default settings (lz4), then `engine.replay.replay(verify=True)` rebuilds the
engine from the manifest, feeds every input and compares every effect. Two entry mixes:
"market-heavy" (a signal every 200th quote, as in most real sessions) and "dense order
flow" (a signal every 20th quote: ten times the orders, acks, fills and timers). Each
figure is the median of the repeats; the table shows the range, since this machine's
timings vary by up to a third from run to run.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from engine import codec
from engine.journal import JournalWriter, Manifest
from engine.messages import (
    KINDS,
    Liquidity,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderType,
    QuoteTick,
    ScheduleTimer,
    Side,
    Signal,
    SubmitOrder,
    TimeInForce,
    TimerFired,
    TradeTick,
)

Entries = list[tuple[Message, int | None]]
INSTRUMENTS = ("BTC-USD", "ETH-USD", "SOL-USD", "AAPL", "EURUSD")
VENUES = ("binance", "coinbase", "kraken", "sim")


def bench_manifest(run_id: str) -> Manifest:
    """A bench run's manifest: its instruments, each listed on every venue the bench uses
    (the market-data table codes instrument and venue in the run's dictionaries)."""
    venues = (*VENUES, "SIM")
    instruments = [{"instrument": i, "venue_symbols": {v: i for v in venues}} for i in INSTRUMENTS]
    return Manifest(
        run_id=run_id, mode="bench", seed=7, code_version="bench", instruments=instruments
    )


def make_entries(count: int, seed: int = 7) -> Entries:
    """Build a deterministic, realistic entry mix: (message, cause index or None)."""
    rng = random.Random(seed)
    out: Entries = []
    ts = 1_700_000_000_000_000_000
    n_order = 0
    while len(out) < count:
        ts += rng.randrange(1_000, 2_000_000)
        inst = rng.choice(INSTRUMENTS)
        venue = rng.choice(VENUES)
        mid = 6_000_000 + rng.randrange(-50_000, 50_000)
        roll = rng.random()
        if roll < 0.82:
            out.append(
                (
                    QuoteTick(
                        ts_recv=ts,
                        ts_event=ts - rng.randrange(100_000, 900_000),
                        instrument=inst,
                        venue=venue,
                        bid_price=mid - rng.randrange(1, 50),
                        bid_size=rng.randrange(1, 10_000),
                        ask_price=mid + rng.randrange(1, 50),
                        ask_size=rng.randrange(1, 10_000),
                    ),
                    None,
                )
            )
        elif roll < 0.92:
            out.append(
                (
                    TradeTick(
                        ts_recv=ts,
                        ts_event=ts - 300_000,
                        instrument=inst,
                        venue=venue,
                        price=mid,
                        qty=rng.randrange(1, 5_000),
                        aggressor=rng.choice((Side.BUY, Side.SELL, None)),
                        trade_id=f"{venue}-t{len(out)}",
                    ),
                    None,
                )
            )
        else:
            # A signal, the order it causes, and the venue's answer.
            n_order += 1
            order_id = f"bench-{n_order}"
            side = rng.choice((Side.BUY, Side.SELL))
            qty = rng.randrange(1, 100)
            signal_at = len(out)
            out.append(
                (
                    Signal(
                        ts_recv=ts,
                        signal_id=f"s{n_order}",
                        strategy="mm1",
                        account="acc1",
                        instrument=inst,
                        side=side,
                        qty=qty,
                        order_type=OrderType.LIMIT,
                        price=mid,
                        tif=TimeInForce.GTC,
                        signal_price=mid,
                    ),
                    None,
                )
            )
            out.append(
                (
                    SubmitOrder(
                        ts_recv=ts,
                        order_id=order_id,
                        venue=venue,
                        instrument=inst,
                        account="acc1",
                        strategy="mm1",
                        side=side,
                        qty=qty,
                        order_type=OrderType.LIMIT,
                        price=mid,
                        tif=TimeInForce.GTC,
                        signal_id=f"s{n_order}",
                    ),
                    signal_at,
                )
            )
            out.append(
                (
                    ScheduleTimer(
                        ts_recv=ts,
                        timer_id=f"{order_id}-timeout",
                        fire_at=ts + 5_000_000_000,
                        purpose="order-timeout",
                        order_id=order_id,
                    ),
                    signal_at,
                )
            )
            ts += 1_000_000
            out.append((OrderAccepted(ts_recv=ts, order_id=order_id, venue=venue), None))
            if rng.random() < 0.6:
                out.append(
                    (
                        OrderFilled(
                            ts_recv=ts + 500_000,
                            ts_event=ts + 400_000,
                            order_id=order_id,
                            venue=venue,
                            trade_id=f"{venue}-f{n_order}",
                            price=mid,
                            qty=qty,
                            fee=rng.randrange(-10, 100),
                            liquidity=Liquidity.MAKER,
                        ),
                        None,
                    )
                )
            elif rng.random() < 0.5:
                out.append(
                    (
                        TimerFired(
                            ts_recv=ts + 5_000_000_000,
                            timer_id=f"{order_id}-timeout",
                            purpose="order-timeout",
                            order_id=order_id,
                        ),
                        None,
                    )
                )
            else:
                out.append((OrderCanceled(ts_recv=ts, order_id=order_id, venue=venue), None))
    return out[:count]


def time_tape_append(
    entries: Entries, batch_size: int, root: Path, compression: Any
) -> tuple[float, float, int]:
    """Append every entry to a JournalWriter; return (append s, close s, bytes on disk)."""
    manifest = bench_manifest(f"bench-{batch_size}")
    run_dir = root / manifest.run_id
    shutil.rmtree(run_dir, ignore_errors=True)
    writer = JournalWriter(
        root, manifest, batch_size=batch_size, fsync="none", compression=compression
    )
    append = writer.append
    started = time.perf_counter()
    for msg, cause in entries:
        append(msg, cause)
    writer.flush()
    appended = time.perf_counter()
    writer.close()
    closed = time.perf_counter()
    size = sum(p.stat().st_size for p in run_dir.rglob("*.arrow"))
    return appended - started, closed - appended, size


def transpose(entries: Entries, batch_size: int) -> list[list[list[Any]]]:
    """Pre-transpose entries into per-batch Python column lists of the journal schema."""
    names = [f.name for f in codec.SCHEMA][3:]
    enum_codes = {
        c.name: {m: i for i, m in enumerate(c.py_type)} for c in codec.COLUMNS if c.codec == "enum"
    }
    kind_code = {cls: i for i, cls in enumerate(KINDS)}
    chunks = []
    for start in range(0, len(entries), batch_size):
        part = entries[start : start + batch_size]
        cols: list[list[Any]] = [
            list(range(start, start + len(part))),
            [cause for _, cause in part],
            [kind_code[type(msg)] for msg, _ in part],
        ]
        for name in names:
            codes = enum_codes.get(name)
            values = [getattr(msg, name, None) for msg, _ in part]
            if codes is not None:
                values = [None if v is None else codes[v] for v in values]
            cols.append(values)
        chunks.append(cols)
    return chunks


def time_raw_pyarrow(chunks: list[list[list[Any]]], path: Path) -> float:
    """Convert pre-transposed column lists with pa.array and write an IPC stream."""
    schema = codec.SCHEMA
    fields = list(schema)
    dictionaries = {index: fixed for index, _, fixed in codec.DICTIONARIES}
    started = time.perf_counter()
    sink = pa.BufferedOutputStream(pa.OSFile(str(path), "wb"), 1 << 20)
    with pa.ipc.new_stream(sink, schema) as writer:
        for cols in chunks:
            arrays = []
            for index, (field, values) in enumerate(zip(fields, cols)):
                fixed = dictionaries.get(index)
                if fixed is None:
                    arrays.append(pa.array(values, field.type))
                else:
                    indices = pa.array(values, pa.int8())
                    arrays.append(pa.DictionaryArray.from_arrays(indices, fixed))
            writer.write_batch(pa.record_batch(arrays, schema=schema))
    sink.close()
    return time.perf_counter() - started


# (batch size, journal compression) runs; the baseline is always uncompressed.
APPEND_RUNS: tuple[tuple[int, str | None], ...] = (
    (1, None),
    (64, None),
    (4096, None),
    (4096, "lz4"),
)


def measure_append(
    runs: tuple[tuple[int, str | None], ...], counts: dict[int, int], repeats: int
) -> list[dict[str, Any]]:
    """Time the journal and the raw-pyarrow baseline for each (batch size, compression).

    Runs alternate (tape, raw, tape, raw, ...) so load drift hits both; best of each.
    """
    rows = []
    root = Path(tempfile.mkdtemp(prefix="tape-bench-"))
    try:
        for batch_size, compression in runs:
            entries = make_entries(counts[batch_size])
            chunks = transpose(entries, batch_size)
            tape: list[tuple[float, float, int]] = []
            raw: list[float] = []
            for _ in range(repeats):
                gc.collect()
                tape.append(time_tape_append(entries, batch_size, root, compression))
                gc.collect()
                raw.append(time_raw_pyarrow(chunks, root / "raw.arrows"))
            n = len(entries)
            append_s = min(t[0] for t in tape)
            with_close_s = min(t[0] + t[1] for t in tape)
            raw_s = min(raw)
            rows.append(
                {
                    "batch_size": batch_size,
                    "compression": compression,
                    "entries": n,
                    "tape_per_s": n / append_s,
                    "tape_with_close_per_s": n / with_close_s,
                    "raw_per_s": n / raw_s,
                    "ratio": raw_s / append_s,
                    "bytes_per_entry": tape[-1][2] / n,
                    "raw_bytes_per_entry": (root / "raw.arrows").stat().st_size / n,
                }
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def bulk_rows(start: int, n: int) -> codec.Rows:
    """Quotes start..start+n-1 of one instrument (a random walk), as journal rows."""
    rng = np.random.default_rng(start)
    mid = 5_000_000 + np.cumsum(rng.integers(-1, 2, n))
    ts = 1_767_225_600_000_000_000 + (start + np.arange(n, dtype=np.int64)) * 1_000_000
    return codec.columns_rows(
        np.full(n, codec.KINDS.index(QuoteTick), dtype=np.int8),
        {
            "ts_recv": ts,
            "ts_event": ts,
            "instrument": pa.array(["BTC-USD"] * n),
            "venue": pa.array(["SIM"] * n),
            "bid_price": mid,
            "bid_size": rng.integers(1, 10, n),
            "ask_price": mid + 1,
            "ask_size": rng.integers(1, 10, n),
        },
    )


def order_entries(k: int, ts: int) -> list[tuple[Message, bool]]:
    """Decision k: a signal, the order it causes (True: caused by the signal), ack, fill."""
    order_id = f"o{k}"
    common = {"instrument": "BTC-USD", "account": "acc", "strategy": "bench", "qty": 1}
    signal = Signal(
        ts_recv=ts, signal_id=f"s{k}", venue="SIM", side=Side.BUY, **common,  # type: ignore[arg-type]
        order_type=OrderType.LIMIT, price=5_000_000,
    )  # fmt: skip
    submit = SubmitOrder(
        ts_recv=ts, order_id=order_id, venue="SIM", side=Side.BUY, **common,  # type: ignore[arg-type]
        order_type=OrderType.LIMIT, price=5_000_000, tif=TimeInForce.GTC, signal_id=f"s{k}",
    )  # fmt: skip
    ack = OrderAccepted(ts_recv=ts + 200_000, order_id=order_id, venue="SIM")
    fill = OrderFilled(
        ts_recv=ts + 300_000, order_id=order_id, venue="SIM", trade_id=f"t{k}",
        price=5_000_000, qty=1, fee=0, liquidity=Liquidity.MAKER,
    )  # fmt: skip
    return [(signal, False), (submit, True), (ack, False), (fill, False)]


BULK_BATCH = 65_536
BULK_EVERY = 1_000


def time_bulk(quotes: int, root: Path) -> tuple[float, Path]:
    """Append `quotes` quotes in slices with an order every BULK_EVERY; return (s, run)."""
    manifest = bench_manifest("bench-bulk")
    shutil.rmtree(root / manifest.run_id, ignore_errors=True)
    chunks = [bulk_rows(a, min(BULK_BATCH, quotes - a)) for a in range(0, quotes, BULK_BATCH)]
    started = time.perf_counter()
    writer = JournalWriter(root, manifest, batch_size=BULK_BATCH, fsync="none")
    k = 0
    ts_column = codec.SCHEMA.get_field_index("ts_recv")
    for rows in chunks:
        ts = rows.columns[ts_column].to_numpy()
        for a in range(0, rows.length, BULK_EVERY):
            b = min(rows.length, a + BULK_EVERY)
            writer.append_rows(rows, a, b)
            if b - a == BULK_EVERY:
                signal_seq = None
                for msg, caused in order_entries(k, int(ts[b - 1])):
                    seq = writer.append(msg, signal_seq if caused else None)
                    signal_seq = seq if signal_seq is None else signal_seq
                k += 1
    writer.close()
    return time.perf_counter() - started, root / manifest.run_id


def measure_bulk(quotes: int, repeats: int) -> dict[str, Any]:
    """Time bulk appends, then the IPC write and the hash chain of its batches alone."""
    import hashlib

    from engine.journal import JournalReader

    root = Path(tempfile.mkdtemp(prefix="tape-bench-bulk-"))
    try:
        runs = []
        for _ in range(repeats):
            gc.collect()
            runs.append(time_bulk(quotes, root))
        tape_s = min(s for s, _ in runs)
        run_dir = runs[-1][1]
        reader = JournalReader(run_dir)
        entries = sum(b.num_rows for b in reader.batches())
        # the quotes as the journal holds them: batches of its market-data table
        batches = []
        for path in reader.sealed_market_paths:
            file = pa.ipc.open_file(str(path))
            batches += [file.get_batch(i) for i in range(file.num_record_batches)]
        size = sum(p.stat().st_size for p in run_dir.rglob("*.arrow"))
        write_s = hash_s = float("inf")
        options = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)
        for _ in range(repeats):
            gc.collect()
            started = time.perf_counter()
            with pa.OSFile(str(root / "raw.arrows"), "wb") as raw:
                sink = pa.BufferedOutputStream(raw, 1 << 20)
                with pa.ipc.new_stream(sink, codec.MARKET_SCHEMA, options=options) as writer:
                    for batch in batches:
                        writer.write_batch(batch)
                sink.close()
            write_s = min(write_s, time.perf_counter() - started)
            data = (root / "raw.arrows").read_bytes()
            started = time.perf_counter()
            hashlib.sha256(data).digest()  # the chain hashes the bytes as written
            hash_s = min(hash_s, time.perf_counter() - started)
        present = sum(1 for c in batches[0].columns if c.null_count != batches[0].num_rows)
        return {
            "entries": entries,
            "present_columns": present,
            "tape_per_s": entries / tape_s,
            "write_per_s": entries / write_s,
            "hash_per_s": entries / hash_s,
            "floor_per_s": entries / (write_s + hash_s),
            "bytes_per_entry": size / entries,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure_replay(ticks: int, every: int, repeats: int) -> dict[str, Any]:
    """Journal a demo sim run, then time replay-verify of it `repeats` times."""
    import sys

    here = Path(__file__).resolve().parent  # bench/sim.py would shadow the sim package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.modules.pop("sim", None)
    from engine.config import EngineConfig
    from engine.replay import replay
    from sim.run import SimRun
    from tape.demo import demo_instruments, demo_market, demo_signals, demo_venues

    root = Path(tempfile.mkdtemp(prefix="tape-bench-replay-"))
    try:
        config = EngineConfig(
            run_id="bench", seed=7, instruments=demo_instruments(), max_order_qty={"*": 10**9}
        )
        quotes = demo_market(7, ticks)
        run = SimRun(config, demo_venues(), root).run(quotes, demo_signals(quotes, 7, every))
        rates = []
        for _ in range(repeats):
            gc.collect()
            started = time.perf_counter()
            result, _ = replay(Path(run.run_dir), verify=True)
            elapsed = time.perf_counter() - started
            if result.divergence is not None:
                raise SystemExit(f"replay diverged: {result.divergence.describe()}")
            rates.append((result.inputs + result.effects) / elapsed)
        rates.sort()
        return {
            "entries": result.inputs + result.effects,
            "effects": result.effects,
            "median": rates[len(rates) // 2],
            "min": rates[0],
            "max": rates[-1],
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Run the journal benchmarks, print a table and a final JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer entries (a smoke run)")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 100))
    if args.quick:
        counts, repeats = {1: 500, 64: 10_000, 4096: 50_000}, 3
    else:
        counts, repeats = {1: 3_000, 64: 60_000, 4096: 400_000}, 5
    figures: dict[str, Any] = {"quick": args.quick}

    # --- append -----------------------------------------------------------------------
    rows = measure_append(APPEND_RUNS, counts, repeats)
    table = Table(title="journal append (fsync=none): tape JournalWriter vs raw pyarrow")
    for col in ("batch", "compr.", "entries", "tape /s", "+close /s", "pyarrow /s", "ratio"):
        table.add_column(col, justify="right")
    table.add_column("B/entry", justify="right")
    table.add_column("raw B/e", justify="right")
    for row in rows:
        table.add_row(
            str(row["batch_size"]),
            str(row["compression"] or "-"),
            f"{row['entries']:,}",
            f"{row['tape_per_s']:,.0f}",
            f"{row['tape_with_close_per_s']:,.0f}",
            f"{row['raw_per_s']:,.0f}",
            f"{row['ratio']:.2f}",
            f"{row['bytes_per_entry']:.0f}",
            f"{row['raw_bytes_per_entry']:.0f}",
        )
        key = f"{row['batch_size']}" + (f"_{row['compression']}" if row["compression"] else "")
        figures[f"append_entries_per_s_{key}"] = round(row["tape_per_s"])
        figures[f"append_with_close_entries_per_s_{key}"] = round(row["tape_with_close_per_s"])
        figures[f"pyarrow_entries_per_s_{key}"] = round(row["raw_per_s"])
        figures[f"append_vs_pyarrow_{key}"] = round(row["ratio"], 3)
        figures[f"bytes_per_entry_{key}"] = round(row["bytes_per_entry"], 1)
    console.print(table)

    # --- bulk append ----------------------------------------------------------------------
    bulk = measure_bulk(500_000 if args.quick else 2_000_000, repeats)
    btable = Table(
        title=f"journal bulk append (sim path, lz4, batch {BULK_BATCH:,}, an order every "
        f"{BULK_EVERY:,} quotes) and what bounds it"
    )
    for col in ("entries", "present cols", "tape /s", "IPC write /s", "hash /s", "floor /s"):
        btable.add_column(col, justify="right")
    btable.add_column("tape/floor", justify="right")
    btable.add_column("B/entry", justify="right")
    btable.add_row(
        f"{bulk['entries']:,}",
        str(bulk["present_columns"]),
        f"{bulk['tape_per_s']:,.0f}",
        f"{bulk['write_per_s']:,.0f}",
        f"{bulk['hash_per_s']:,.0f}",
        f"{bulk['floor_per_s']:,.0f}",
        f"{bulk['tape_per_s'] / bulk['floor_per_s']:.2f}",
        f"{bulk['bytes_per_entry']:.0f}",
    )
    console.print(btable)
    figures["bulk_entries_per_s"] = round(bulk["tape_per_s"])
    figures["bulk_ipc_write_lz4_entries_per_s"] = round(bulk["write_per_s"])
    figures["bulk_hash_entries_per_s"] = round(bulk["hash_per_s"])
    figures["bulk_floor_entries_per_s"] = round(bulk["floor_per_s"])
    figures["bulk_vs_floor"] = round(bulk["tape_per_s"] / bulk["floor_per_s"], 3)
    figures["bulk_bytes_per_entry"] = round(bulk["bytes_per_entry"], 1)

    # --- replay-verify --------------------------------------------------------------------
    ticks = 3_000 if args.quick else 30_000
    rtable = Table(title="replay-verify: fresh engine from the manifest, every effect compared")
    for col in ("mix", "entries", "effects", "median /s", "min /s", "max /s"):
        rtable.add_column(col, justify="right")
    for name, every in (("market_heavy", 200), ("dense", 20)):
        result = measure_replay(ticks, every, repeats)
        rtable.add_row(
            name.replace("_", "-"),
            f"{result['entries']:,}",
            f"{result['effects']:,}",
            f"{result['median']:,.0f}",
            f"{result['min']:,.0f}",
            f"{result['max']:,.0f}",
        )
        suffix = "" if name == "market_heavy" else f"_{name}"
        figures[f"replay_verify_entries_per_s{suffix}"] = round(result["median"])
        figures[f"replay_entries{suffix}"] = result["entries"]
    console.print(rtable)

    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
