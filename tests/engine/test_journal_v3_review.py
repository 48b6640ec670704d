"""Review of the session-5 speed work on the journal and codec (4c5f409..7532873):
`JournalWriter.end_group`/`pending`, lazy null columns, write-behind, journal format 3
(run dictionaries for the market-data table's instrument and venue)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.codec import RunValues, assemble_split, columns_rows, merge, one_value
from engine.journal import MARKET_DIR, JournalReader, JournalWriter, Manifest
from engine.messages import (
    KIND_CODE,
    Alert,
    BookDelta,
    QuoteTick,
    Severity,
    Side,
    TradeTick,
)


def manifest(run_id: str = "r5") -> Manifest:
    return Manifest(
        run_id=run_id,
        mode="test",
        seed=0,
        code_version="test",
        instruments=[
            {"instrument": "X", "venue_symbols": {"V": "X", "W": "X"}},
            {"instrument": "Y", "venue_symbols": {"V": "Y"}},
        ],
    )


def quote(ts: int, instrument: str = "X", venue: str = "V") -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        instrument=instrument,
        venue=venue,
        bid_price=5,
        bid_size=1,
        ask_price=6,
        ask_size=2,
    )


def alert(ts: int) -> Alert:
    return Alert(ts_recv=ts, severity=Severity.WARNING, code="c", text="t")


def seqs_and_msgs(run_dir: Path) -> list[tuple[int, object]]:
    return [(e.seq, e.msg) for e in JournalReader(run_dir).entries()]


# --- crash recovery ----------------------------------------------------------------------


def test_reader_when_entries_file_tail_lost_before_a_later_market_group_then_no_seq_gap(
    tmp_path: Path,
) -> None:
    """A crash (power loss under fsync "none"/"batch") can cut the end of each open file
    independently: here the entries file lost the group holding seq 2 (entries only),
    while the market-data file kept the later group holding seq 3. Readers must stop at
    the last group whole *in order* (seq 0..1), as the module docstring promises, so that
    a writer reopening the run continues after seq 1 and no seq is ever missing.

    Found in review: `_Pair._settle` kept every group whole by itself and returned seq 0,
    1, 3 (a gap journaled for good once a writer reopened the run); it now also stops at
    the first group that does not start where the one before ended.
    """
    run_dir = tmp_path / "r5"
    writer = JournalWriter(tmp_path, manifest(), batch_size=100, fsync="none")
    writer.append(quote(0))  # seq 0: market file
    writer.append(alert(1))  # seq 1: entries file
    writer.flush()
    entries_file = run_dir / "000000.arrows"
    size_after_first_group = entries_file.stat().st_size
    writer.append(alert(2))  # seq 2: a group with an entries batch only
    writer.flush()
    writer.append(quote(3))  # seq 3: a group with a market-data batch only
    writer.flush()
    # the crash: a snapshot of the run as the disk holds it, with the entries file's tail
    # (the group of seq 2) not persisted while the market-data file's later group was
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copytree(run_dir, crashed / "r5")
    writer.close()
    os.truncate(crashed / "r5" / "000000.arrows", size_after_first_group)

    got = [seq for seq, _ in seqs_and_msgs(crashed / "r5")]
    assert got == list(range(len(got))), f"seq gap in what the reader returns: {got}"
    assert got == [0, 1]


# --- bench/tca.py: format 3's Categorical instrument/venue ----------------------------------


def test_bench_tca_scan_floor_when_market_file_has_run_dictionaries_then_it_reads(
    tmp_path: Path,
) -> None:
    """bench/tca.py `scan_floor` concatenates the entries files and the market-data files
    with Polars `how="diagonal"`: since format 3 the market files' instrument and venue are
    Categorical (dictionary<int32, utf8>) while the entries files' are String, which Polars
    refuses to concat: it casts the narrow columns to the entries files' types (found in
    review; analytics/tca.py and analytics/summary.py do the same).
    """
    bench_tca = pytest.importorskip("bench.tca")
    with JournalWriter(tmp_path, manifest(), batch_size=4) as writer:
        for n in range(10):
            writer.append(quote(n))
        writer.append(alert(10))
    assert bench_tca.scan_floor(tmp_path / "r5") >= 0.0


# --- coverage: paths of the new code that no test took ------------------------------------


@pytest.mark.parametrize("fsync", ["always", "batch", "none"])
def test_end_group_when_mixed_rows_outside_the_manifest_then_entries_and_market_split(
    tmp_path: Path, fsync: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bulk rows of one `Rows` mixing the run's instruments/venues with others (and
    builder rows between slices), groups ended by `end_group` mid-`Rows`, a rotation every
    group, every fsync policy (threaded writes under "none"): every entry comes back in
    seq order, market data of the run's pairs in the market files and the others in the
    entries files, and verify passes."""
    from engine import journal as journal_module

    monkeypatch.setattr(journal_module, "_THREAD_ROWS", 1)
    n = 40
    inst = ["X", "Y", "Z", "X", "X"] * (n // 5)
    ven = ["V", "V", "V", "W", "U"] * (n // 5)
    rows = columns_rows(
        np.full(n, KIND_CODE[QuoteTick], np.int8),
        {
            "ts_recv": pa.array(np.arange(n, dtype=np.int64)),
            "instrument": pa.array(inst, pa.string()),
            "venue": pa.array(ven, pa.string()),
            "bid_price": pa.array([5] * n, pa.int64()),
            "bid_size": pa.array([1] * n, pa.int64()),
            "ask_price": pa.array([6] * n, pa.int64()),
            "ask_size": pa.array([2] * n, pa.int64()),
        },
    )
    expected: list[object] = []
    policy: Any = fsync
    with JournalWriter(tmp_path, manifest(), batch_size=9, fsync=policy, segment_bytes=1) as writer:
        for a, b in [(0, 3), (3, 4), (4, 17), (17, 40)]:
            writer.append_rows(rows, a, b)
            expected += [quote(k, inst[k], ven[k]) for k in range(a, b)]
            writer.append(alert(b))
            expected.append(alert(b))
            assert writer.pending > 0
            writer.end_group()
            assert writer.pending == 0
    run_dir = tmp_path / "r5"
    reader = JournalReader(run_dir)
    assert [e.msg for e in reader.entries()] == expected
    report = reader.verify()
    assert report.ok, report.problems
    assert report.segments > 3  # rotated
    market = pa.concat_tables(pa.ipc.open_file(p).read_all() for p in reader.sealed_market_paths)
    pairs = set(
        zip(
            market.column("instrument").to_pylist(),
            market.column("venue").to_pylist(),
            strict=True,
        )
    )
    assert pairs == {("X", "V"), ("Y", "V"), ("X", "W")}
    assert market.num_rows == sum(1 for i, v in zip(inst, ven) if v != "U" and i != "Z")


def test_assemble_split_when_sliced_columns_then_market_codes_follow_the_slice() -> None:
    """Rows whose string columns are slices of larger arrays (offset > 0), appended in
    parts: the run codes are sliced with the rows, so decoding gives each row its own
    instrument and venue."""
    base_inst = pa.array(["pad", "pad", *(["X", "Y", "X", "Q"] * 3)], pa.string()).slice(2)
    base_ven = pa.array(["pad", "pad", *(["V", "V", "W", "V"] * 3)], pa.string()).slice(2)
    n = len(base_inst)
    rows = columns_rows(
        np.array([KIND_CODE[QuoteTick], KIND_CODE[TradeTick]] * (n // 2), np.int8),
        {
            "ts_recv": pa.array(np.arange(n, dtype=np.int64)),
            "instrument": base_inst,
            "venue": base_ven,
            "bid_price": pa.array([5 if k % 2 == 0 else None for k in range(n)], pa.int64()),
            "bid_size": pa.array([1 if k % 2 == 0 else None for k in range(n)], pa.int64()),
            "ask_price": pa.array([6 if k % 2 == 0 else None for k in range(n)], pa.int64()),
            "ask_size": pa.array([2 if k % 2 == 0 else None for k in range(n)], pa.int64()),
            "price": pa.array([None if k % 2 == 0 else 7 for k in range(n)], pa.int64()),
            "qty": pa.array([None if k % 2 == 0 else 3 for k in range(n)], pa.int64()),
        },
    )
    run = RunValues(["X", "Y"], ["V", "W"])
    market, entries = assemble_split(100, [(rows, 1, 5), (rows, 5, 11)], run)
    assert market is not None and entries is not None
    both = merge(entries, market)
    assert both.column("seq").to_pylist() == list(range(100, 110))
    assert both.column("instrument").to_pylist() == base_inst.to_pylist()[1:11]
    assert both.column("venue").to_pylist() == base_ven.to_pylist()[1:11]
    assert set(entries.column("instrument").to_pylist()) == {"Q"}


@pytest.mark.parametrize(
    ("values", "offset", "want"),
    [
        (["ab", "ab", "ab"], 0, "ab"),
        (["zz", "ab", "ab"], 1, "ab"),
        (["ab", "ba", "ab"], 0, None),
        (["", "", ""], 0, ""),
        (["a", "bb", "ccc"], 0, None),
        (["é", "é"], 0, "é"),
    ],
)
def test_one_value_when_sliced_or_not_then_the_one_value_or_none(
    values: list[str], offset: int, want: str | None
) -> None:
    assert one_value(pa.array(values, pa.string()).slice(offset)) == want


def test_one_value_when_nulls_or_other_types_then_none() -> None:
    assert one_value(pa.array(["a", None, "a"], pa.string())) is None
    assert one_value(pa.array(["a", "a"], pa.large_string())) is None
    assert one_value(pa.array([], pa.string())) is None


def test_open_run_reader_when_groups_written_by_thread_then_prefix_and_book_deltas_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader of an open run under fsync "none" (groups written by the journal thread,
    with write-behind) sees a whole-group prefix; trades and book deltas of the run's
    pairs decode from the coded market table with their enums."""
    from engine import journal as journal_module

    monkeypatch.setattr(journal_module, "_THREAD_ROWS", 1)
    msgs: list[object] = []
    writer = JournalWriter(tmp_path, manifest(), batch_size=3, fsync="none")
    for k in range(20):
        msg: object
        if k % 3 == 0:
            msg = TradeTick(ts_recv=k, instrument="Y", venue="V", price=5, qty=1, aggressor=None)
        elif k % 3 == 1:
            msg = BookDelta(
                ts_recv=k, instrument="X", venue="W", side=Side.BUY, price=4, qty=2, clear=True
            )
        else:
            msg = quote(k, "X", "U")  # venue outside the manifest: entries file
        writer.append(msg)
        msgs.append(msg)
    writer.head_hash  # noqa: B018 -- joins the thread: its groups are on disk
    got = [e.msg for e in JournalReader(tmp_path / "r5").entries()]
    assert got == msgs[: len(got)] and len(got) == 18
    writer.close()
    reader = JournalReader(tmp_path / "r5")
    assert [e.msg for e in reader.entries()] == msgs
    assert reader.verify().ok
    assert (tmp_path / "r5" / MARKET_DIR / "000000.arrow").exists()


@settings(max_examples=60, deadline=None)
@example(kinds=["q", "a", "a", "q"], flushes=[2, 3], cut_entries=0.97, cut_market=1.0)
@given(
    kinds=st.lists(st.sampled_from(["q", "a", "z"]), min_size=1, max_size=30),
    flushes=st.lists(st.integers(1, 30), max_size=15),
    cut_entries=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),  # 1.0: the file kept whole
    cut_market=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
)
def test_crash_when_each_open_file_is_cut_anywhere_then_seqs_stay_contiguous_and_run_goes_on(
    kinds: list[str], flushes: list[int], cut_entries: float, cut_market: float
) -> None:
    """A power loss under fsync "none" can cut each open file of a segment at any byte,
    independently. Whatever survives, readers return seqs 0..n-1 with no gap (a group
    after a lost one is dropped too), and a writer reopening the run continues at n and
    verifies. q: a quote of the run (market file), z: a quote of another instrument
    (entries file), a: an alert (entries file)."""
    make = {"q": quote, "z": lambda ts: quote(ts, "Z"), "a": alert}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        writer = JournalWriter(root, manifest(), batch_size=1_000, fsync="none")
        for n, kind in enumerate(kinds):
            writer.append(make[kind](n))
            if n + 1 in flushes:
                writer.flush()  # a group ends here
        writer.flush()
        crashed = root / "crashed"
        shutil.copytree(root / "r5", crashed / "r5")
        writer.close()
        run_dir = crashed / "r5"
        for path, cut in (
            (run_dir / "000000.arrows", cut_entries),
            (run_dir / MARKET_DIR / "000000.arrows", cut_market),
        ):
            if path.exists():
                size = path.stat().st_size
                os.truncate(path, int(size * cut))
        got = [seq for seq, _ in seqs_and_msgs(run_dir)]
        assert got == list(range(len(got)))
        again = JournalWriter(crashed, manifest(), batch_size=1_000, fsync="none")
        assert again.next_seq == len(got)
        again.append(alert(10_000))
        again.close()
        reader = JournalReader(run_dir)
        assert [e.seq for e in reader.entries()] == list(range(len(got) + 1))
        assert reader.verify().ok


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.sampled_from(["", "a", "ab", "ba", "é", "abab"]), min_size=1, max_size=12),
    offset=st.integers(0, 3),
)
def test_one_value_when_any_column_then_as_the_rows_say(values: list[str], offset: int) -> None:
    column = pa.array(values, pa.string()).slice(min(offset, len(values) - 1))
    rows = column.to_pylist()
    assert one_value(column) == (rows[0] if len(set(rows)) == 1 else None)
