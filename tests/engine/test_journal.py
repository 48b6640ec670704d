"""Tests of the Arrow run journal: writer, reader, torn tails, hash chain, analytics readers."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import MARKET_SCHEMA, SCHEMA, CodecError, Entry
from engine.journal import (
    FORMAT_VERSION,
    LOCK,
    MARKET_DIR,
    JournalError,
    JournalReader,
    JournalWriter,
    Manifest,
    TornTail,
    genesis_hash,
    read_manifest,
    verify,
)
from engine.messages import (
    Alert,
    OrderAccepted,
    OrderType,
    QuoteTick,
    Severity,
    Side,
    SubmitOrder,
    TimeInForce,
)


def manifest(run_id: str = "run-1", **overrides: Any) -> Manifest:
    values: dict[str, Any] = {
        "run_id": run_id,
        "mode": "test",
        "seed": 42,
        "config": {"risk": {"max_qty": 10}},
        "instruments": [
            {"instrument": "BTC-USD", "price_precision": 2, "venue_symbols": {"sim": "BTC-USD"}}
        ],
        "fill_model_hash": None,
        "code_version": "test",
    }
    values.update(overrides)
    return Manifest(**values)


def quote(ts: int, price: int = 100) -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        ts_event=ts - 1,
        instrument="BTC-USD",
        venue="sim",
        bid_price=price,
        bid_size=3,
        ask_price=price + 1,
        ask_size=4,
    )


def order(ts: int, n: int) -> SubmitOrder:
    return SubmitOrder(
        ts_recv=ts,
        order_id=f"o{n}",
        venue="sim",
        instrument="BTC-USD",
        account="a",
        strategy="s",
        side=Side.BUY,
        qty=1,
        order_type=OrderType.LIMIT,
        price=100,
        tif=TimeInForce.GTC,
    )


def write_run(writer: JournalWriter, inputs: int, start_ts: int = 0) -> list[Entry]:
    """Append `inputs` quotes; every third one causes an order. Return what was appended."""
    appended = []
    for n in range(inputs):
        msg = quote(start_ts + n, 100 + n)
        seq = writer.append(msg)
        appended.append(Entry(seq, None, msg))
        if n % 3 == 0:
            effect = order(start_ts + n, n)
            appended.append(Entry(writer.append(effect, seq), seq, effect))
    return appended


def segment_names(run_dir: Path) -> list[str]:
    """Segment entries files (.arrow, .arrows, .torn) in the run directory."""
    return sorted(
        p.name for p in run_dir.iterdir() if p.name not in ("manifest.json", LOCK, MARKET_DIR)
    )


def market_names(run_dir: Path) -> list[str]:
    """Segment market-data files (.arrow, .arrows, .torn) of the run."""
    return sorted(p.name for p in (run_dir / MARKET_DIR).iterdir())


def batch_ends(path: Path) -> list[int]:
    """Byte offsets in the file at which each record-batch message of an open segment
    (the IPC file magic, then a stream) ends."""
    data = path.read_bytes()
    assert data[:8] == b"ARROW1\x00\x00"
    source = pa.BufferReader(pa.py_buffer(data))
    source.seek(8)
    reader = pa.ipc.MessageReader.open_stream(source)
    ends: list[int] = []
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            return ends
        if message.type == "record batch":
            ends.append(source.tell())


# --- writing and reading --------------------------------------------------------------------


def test_writer_when_closed_then_reader_returns_every_entry_in_seq_order(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=8)
    appended = write_run(writer, 30)
    writer.close()
    reader = JournalReader(tmp_path / "run-1")
    assert list(reader.entries()) == appended
    assert [e.seq for e in reader.entries()] == list(range(len(appended)))
    assert reader.torn == []
    assert segment_names(tmp_path / "run-1") == ["000000.arrow"]


def test_manifest_when_run_closes_then_it_records_status_head_and_entries(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=4)
    assert JournalReader(tmp_path / "run-1").manifest.status == "open"
    write_run(writer, 5)
    writer.close()
    stored = JournalReader(tmp_path / "run-1").manifest
    assert stored.status == "closed"
    assert stored.entries == 7
    assert stored.head_hash == writer.head_hash
    assert stored.config == {"risk": {"max_qty": 10}}
    assert stored.instruments == manifest().instruments
    assert not list((tmp_path / "run-1").glob("*.tmp"))


def test_reader_when_run_is_still_open_then_it_reads_flushed_batches(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=100)
    appended = write_run(writer, 4)
    writer.flush()
    writer.append(quote(99))  # pending, not yet written
    reader = JournalReader(tmp_path / "run-1")
    assert list(reader.entries()) == appended
    assert reader.torn == []
    assert reader.verify().ok
    writer.close()


def test_writer_when_segment_exceeds_segment_bytes_then_it_rotates_and_seals(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=5, segment_bytes=20_000)
    appended = write_run(writer, 60)
    writer.close()
    names = segment_names(tmp_path / "run-1")
    assert len(names) > 2
    assert names == [f"{i:06d}.arrow" for i in range(len(names))]
    reader = JournalReader(tmp_path / "run-1")
    assert list(reader.entries()) == appended
    report = reader.verify()
    assert report.ok and report.chain_ok, report.problems
    assert report.segments == len(names)
    assert (report.first_seq, report.last_seq, report.entries) == (0, 79, 80)


def test_reader_when_writer_rotates_meanwhile_then_it_reads_every_flushed_entry(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=5, segment_bytes=20_000)
    appended: list[Entry] = []
    for round_ in range(6):
        appended += write_run(writer, 12, start_ts=round_ * 100)
        writer.flush()
        reader = JournalReader(tmp_path / "run-1")  # seals may be in flight
        assert list(reader.entries()) == appended
        assert reader.verify().ok
    writer.close()
    assert all(name.endswith(".arrow") for name in segment_names(tmp_path / "run-1"))


def test_seq_when_batches_flushes_rotations_and_restarts_mix_then_it_stays_contiguous(
    tmp_path: Path,
) -> None:
    appended: list[Entry] = []
    for restart in range(3):
        writer = JournalWriter(tmp_path, manifest(), batch_size=7, segment_bytes=30_000)
        assert writer.next_seq == len(appended)
        for n in range(10):
            appended += write_run(writer, 3, start_ts=restart * 1000 + n * 10)
            if n % 4 == 0:
                writer.flush()
        writer.close()
    reader = JournalReader(tmp_path / "run-1")
    entries = list(reader.entries())
    assert [e.seq for e in entries] == list(range(len(appended)))
    assert entries == appended
    assert reader.verify().ok


def test_reader_counts_by_kind_when_run_has_mixed_kinds_then_counts_in_kinds_order(
    tmp_path: Path,
) -> None:
    with JournalWriter(tmp_path, manifest(), batch_size=4) as writer:
        write_run(writer, 10)
        writer.append(Alert(ts_recv=5, severity=Severity.INFO, code="c", text="t"))
    counts = JournalReader(tmp_path / "run-1").counts_by_kind()
    assert counts == {"QuoteTick": 10, "SubmitOrder": 4, "Alert": 1}
    assert list(counts) == ["QuoteTick", "SubmitOrder", "Alert"]


@pytest.mark.parametrize("n", [0, 1, 3, 5, 14, 100])
def test_reader_tail_when_asked_for_n_then_last_n_entries_oldest_first(
    tmp_path: Path, n: int
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=3, segment_bytes=15_000)
    appended = write_run(writer, 10)
    writer.flush()
    writer.close()
    expected = appended[-n:] if n else []
    assert JournalReader(tmp_path / "run-1").tail(n) == expected


def test_reader_when_both_sealed_and_open_segment_exist_then_sealed_wins(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=4)
    appended = write_run(writer, 6)
    writer.close()
    run_dir = tmp_path / "run-1"
    (run_dir / "000000.arrows").write_bytes(b"stale stream a crash left behind")
    assert list(JournalReader(run_dir).entries()) == appended
    writer = JournalWriter(tmp_path, manifest())  # a restart cleans it up
    writer.close()
    assert "000000.arrows" not in segment_names(run_dir)


# --- fsync policies -------------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record fsync calls on regular files (not directories)."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("always", (1, 1, 1)), ("batch", (1, 0, 1)), ("none", (0, 0, 1))],
)
def test_writer_fsync_when_policy_is_given_then_batches_are_synced_as_documented(
    tmp_path: Path, fsyncs: list[int], policy: Any, expected: tuple[int, int, int]
) -> None:
    after_full, after_partial, after_durable = expected
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, fsync=policy)
    fsyncs.clear()  # the manifest
    for n in range(4):
        writer.append(quote(n))
    assert len(fsyncs) == after_full
    fsyncs.clear()
    writer.append(quote(5))
    writer.flush()
    assert len(fsyncs) == after_partial
    fsyncs.clear()
    writer.append(quote(6))
    writer.flush(durable=True)
    assert len(fsyncs) == after_durable
    fsyncs.clear()
    writer.close()
    assert len(fsyncs) >= 1  # the sealed segment and the manifest, whatever the policy


@pytest.mark.parametrize(("policy", "expected"), [("always", 0), ("batch", 0), ("none", 1)])
def test_writer_flush_durable_when_nothing_pending_then_fsyncs_only_unsynced_batches(
    tmp_path: Path, fsyncs: list[int], policy: Any, expected: int
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=2, fsync=policy)
    writer.append(quote(1))
    writer.append(quote(2))  # a full batch, written
    fsyncs.clear()
    writer.flush(durable=True)
    writer.flush(durable=True)
    assert len(fsyncs) == expected
    writer.close()


def test_writer_when_compression_is_unknown_then_error_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"compression: expected lz4, zstd or None, got 'gzip'"):
        JournalWriter(tmp_path, manifest(), compression="gzip")  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_writer_when_compressed_then_chain_verifies_and_restart_continues(
    tmp_path: Path, compression: Any
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, compression=compression)
    appended = write_run(writer, 9)
    writer.close()
    with JournalWriter(tmp_path, manifest(), batch_size=4) as writer:  # uncompressed now
        appended += write_run(writer, 3, start_ts=100)
    reader = JournalReader(tmp_path / "run-1")
    assert list(reader.entries()) == appended
    report = reader.verify()
    assert report.ok and report.chain_ok, report.problems


def test_writer_when_fsync_policy_is_unknown_then_error_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"fsync: expected one of always, batch, none, got 'sometimes'"
    ):
        JournalWriter(tmp_path, manifest(), fsync="sometimes")  # type: ignore[arg-type]


# --- analytics readers ------------------------------------------------------------------------


@pytest.fixture(params=[None, "lz4"])
def sealed_run(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, list[Entry]]:
    writer = JournalWriter(
        tmp_path, manifest(), batch_size=8, segment_bytes=20_000, compression=request.param
    )
    appended = write_run(writer, 40)
    writer.close()
    assert len(segment_names(tmp_path / "run-1")) > 1
    return tmp_path / "run-1", appended


def test_polars_when_scanning_a_sealed_journal_then_it_reads_every_entry(
    sealed_run: tuple[Path, list[Entry]],
) -> None:
    run_dir, appended = sealed_run
    frame = (
        pl.scan_ipc(str(run_dir / "*.arrow"))
        .filter(pl.col("kind").cast(pl.Utf8) == "SubmitOrder")
        .select("seq", "cause", "order_id", "price")
        .collect()
    )
    orders = [e for e in appended if isinstance(e.msg, SubmitOrder)]
    assert frame["seq"].to_list() == [e.seq for e in orders]
    assert frame["cause"].to_list() == [e.cause for e in orders]
    assert frame["order_id"].to_list() == [e.msg.order_id for e in orders]  # type: ignore[attr-defined]
    market = pl.scan_ipc(str(run_dir / MARKET_DIR / "*.arrow")).select("seq", "bid_price").collect()
    quotes = [e for e in appended if isinstance(e.msg, QuoteTick)]
    assert market["seq"].to_list() == [e.seq for e in quotes]
    assert market["bid_price"].to_list() == [e.msg.bid_price for e in quotes]  # type: ignore[attr-defined]
    assert len(orders) + len(quotes) == len(appended)


def test_pyarrow_dataset_when_reading_a_sealed_journal_then_it_reads_every_entry(
    sealed_run: tuple[Path, list[Entry]],
) -> None:
    run_dir, appended = sealed_run
    dataset = pads.dataset(sorted(str(p) for p in run_dir.glob("*.arrow")), format="arrow")
    market = pads.dataset(
        sorted(str(p) for p in (run_dir / MARKET_DIR).glob("*.arrow")), format="arrow"
    )
    assert dataset.schema.equals(SCHEMA)
    assert market.schema.equals(MARKET_SCHEMA)
    seqs = dataset.to_table(columns=["seq"]).column("seq").to_pylist()
    seqs += market.to_table(columns=["seq"]).column("seq").to_pylist()
    assert sorted(seqs) == [e.seq for e in appended]
    quotes = market.to_table(filter=pads.field("kind") == "QuoteTick", columns=["bid_price"])
    bids = [e.msg.bid_price for e in appended if isinstance(e.msg, QuoteTick)]
    assert quotes.column("bid_price").to_pylist() == bids


def test_duckdb_when_querying_a_sealed_journal_through_arrow_then_it_counts_by_kind(
    sealed_run: tuple[Path, list[Entry]],
) -> None:
    run_dir, appended = sealed_run
    reader = JournalReader(run_dir)
    journal = pads.dataset([str(p) for p in reader.sealed_paths], format="arrow")
    market = pads.dataset([str(p) for p in reader.sealed_market_paths], format="arrow")
    con = duckdb.connect()
    con.register("journal", journal)
    con.register("market", market)
    rows = con.execute(
        "select kind, count(*), max(seq) from (select kind, seq from journal "
        "union all select kind, seq from market) group by kind order by kind"
    ).fetchall()
    expected = [
        (kind, len(seqs), max(seqs))
        for kind in ("QuoteTick", "SubmitOrder")
        for seqs in [[e.seq for e in appended if type(e.msg).__name__ == kind]]
    ]
    assert rows == expected
    con.close()


# --- torn tails -----------------------------------------------------------------------------


def crash_snapshot(writer: JournalWriter, into: Path) -> Path:
    """Copy the run directory as a crash would leave it (what reached the OS)."""
    target = into / writer.run_dir.name
    shutil.copytree(writer.run_dir, target)
    return target


class Crashed(msgspec.Struct, frozen=True):
    """An open segment of 4 whole groups (no EOS) as a crash leaves it: its two files, their
    batch ends, the manifest and the entries."""

    stream: bytes  # 000000.arrows (entries but the quotes)
    market: bytes  # market/000000.arrows
    ends: list[int]
    market_ends: list[int]
    manifest: bytes
    appended: list[Entry]


@pytest.fixture(scope="module")
def crashed_stream() -> Iterator[Crashed]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        writer = JournalWriter(root / "live", manifest(), batch_size=5)
        appended = write_run(writer, 15)
        writer.flush()
        snapshot = crash_snapshot(writer, root / "crash")
        writer.close()
        stream = snapshot / "000000.arrows"
        market = snapshot / MARKET_DIR / "000000.arrows"
        yield Crashed(
            stream.read_bytes(),
            market.read_bytes(),
            batch_ends(stream),
            batch_ends(market),
            (snapshot / "manifest.json").read_bytes(),
            appended,
        )


@settings(max_examples=60)
@given(data=st.data(), which=st.sampled_from(["entries", "market"]))
def test_reader_when_last_batch_is_cut_at_any_byte_then_it_recovers_the_whole_batches_before(
    crashed_stream: Crashed, data: st.DataObject, which: str
) -> None:
    crashed = crashed_stream
    stream, market = crashed.stream, crashed.market
    assert crashed.ends[-1] == len(stream) and crashed.market_ends[-1] == len(market)  # no EOS
    start, market_start = crashed.ends[-2], crashed.market_ends[-2]
    if which == "entries":
        cut = data.draw(st.integers(start, len(stream) - 1), label="cut")
        stream = stream[:cut]
    else:
        cut = data.draw(st.integers(market_start, len(market) - 1), label="cut")
        market = market[:cut]
    whole = len(crashed.appended) - 5  # all but the last group
    expected = [  # the last group is not whole in both files: both files lose it
        TornTail(
            f"{MARKET_DIR}/000000.arrows", market_start, len(market) - market_start, whole - 1
        ),
        TornTail("000000.arrows", start, len(stream) - start, whole - 1),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        (run_dir / "manifest.json").write_bytes(crashed.manifest)
        (run_dir / "000000.arrows").write_bytes(stream)
        (run_dir / MARKET_DIR).mkdir()
        (run_dir / MARKET_DIR / "000000.arrows").write_bytes(market)
        reader = JournalReader(run_dir)
        entries = list(reader.entries())
        assert entries == crashed.appended[:whole]
        # a file that ends after a whole batch is not torn, EOS or not
        assert reader.torn == [t for t in expected if t.cut_bytes]
        report = reader.verify()
        assert report.ok and report.chain_ok and report.entries == whole
        assert report.torn == reader.torn


@pytest.mark.parametrize("size", [0, 3, 100])
def test_reader_when_crash_left_a_partial_schema_then_no_entries_and_torn_reported(
    tmp_path: Path, crashed_stream: Crashed, size: int
) -> None:
    (tmp_path / "manifest.json").write_bytes(crashed_stream.manifest)
    (tmp_path / "000000.arrows").write_bytes(crashed_stream.stream[:size])
    reader = JournalReader(tmp_path)
    assert list(reader.entries()) == []
    kept = 8 if size >= 8 else 0  # the file magic the segment starts with, when whole
    assert reader.torn == ([TornTail("000000.arrows", kept, size - kept, None)] if size else [])
    assert reader.verify().ok


def test_writer_when_restarted_after_a_torn_tail_then_it_cuts_seals_and_continues(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path / "live", manifest(), batch_size=5)
    appended = write_run(writer, 15)  # 20 entries: 4 whole batches
    writer.flush()
    run_dir = crash_snapshot(writer, tmp_path / "crash")
    writer.close()
    stream = run_dir / "000000.arrows"
    ends = batch_ends(stream)
    cut = ends[-2] + 37
    torn_bytes = stream.read_bytes()[ends[-2] : cut]
    with open(stream, "r+b") as f:
        f.truncate(cut)

    restarted = JournalWriter(tmp_path / "crash", manifest(), batch_size=5)
    assert restarted.torn == TornTail("000000.arrows", ends[-2], 37, 14)
    assert (run_dir / "000000.torn").read_bytes() == torn_bytes
    assert segment_names(run_dir) == ["000000.arrow", "000000.torn"]
    assert restarted.next_seq == 15
    more = write_run(restarted, 4, start_ts=500)
    restarted.close()
    assert segment_names(run_dir) == ["000000.arrow", "000000.torn", "000001.arrow"]
    reader = JournalReader(run_dir)
    assert list(reader.entries()) == appended[:15] + more
    report = reader.verify()
    assert report.ok and report.chain_ok, report.problems
    assert reader.manifest.status == "closed" and reader.manifest.entries == 15 + len(more)


def test_writer_when_restarted_after_a_crash_before_any_batch_then_it_starts_at_seq_zero(
    tmp_path: Path,
) -> None:
    crashed = JournalWriter(tmp_path / "live", manifest(), batch_size=5)
    run_dir = crash_snapshot(crashed, tmp_path)  # manifest only, then a partial schema:
    (run_dir / "000000.arrows").write_bytes(b"\xff\xff\xff\xff\x10\x00")
    writer = JournalWriter(tmp_path, manifest(), batch_size=5)
    assert writer.torn == TornTail("000000.arrows", 0, 6, None)
    assert writer.next_seq == 0
    appended = write_run(writer, 2)
    writer.close()
    reader = JournalReader(tmp_path / "run-1")
    assert list(reader.entries()) == appended
    assert reader.verify().ok
    crashed.close()


def test_writer_when_reopening_a_closed_run_then_it_continues_in_a_new_segment(
    tmp_path: Path,
) -> None:
    with JournalWriter(tmp_path, manifest(), batch_size=5) as writer:
        first = write_run(writer, 3)
    with JournalWriter(tmp_path, manifest(), batch_size=5) as writer:
        assert writer.torn is None
        second = write_run(writer, 3, start_ts=100)
    reader = JournalReader(tmp_path / "run-1")
    assert [e.seq for e in reader.entries()] == list(range(len(first) + len(second)))
    assert segment_names(tmp_path / "run-1") == ["000000.arrow", "000001.arrow"]
    assert reader.verify().ok


# --- hash chain -----------------------------------------------------------------------------


def rewrite_sealed(path: Path, keep: Any) -> None:
    """Rewrite a sealed segment keeping (batch, metadata) pairs chosen by `keep`."""
    reader = pa.ipc.open_file(pa.py_buffer(path.read_bytes()))  # not mapped: we overwrite it
    batches = [reader.get_batch_with_custom_metadata(i) for i in range(reader.num_record_batches)]
    chosen = keep(batches)
    with pa.ipc.new_file(str(path), SCHEMA) as writer:
        for batch, meta in chosen:
            writer.write_batch(batch, custom_metadata=meta)


def test_verify_when_a_value_in_a_sealed_segment_is_edited_then_that_batch_is_named(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, compression=None)  # raw bytes
    for n in range(16):
        writer.append(quote(n, price=1000 * n))
    writer.close()
    path = tmp_path / "run-1" / MARKET_DIR / "000000.arrow"
    data = path.read_bytes()
    needle = (9000).to_bytes(8, "little", signed=True)  # the bid_price of quote 9
    assert data.count(needle) == 1
    path.write_bytes(data.replace(needle, (7).to_bytes(8, "little", signed=True)))
    report = JournalReader(tmp_path / "run-1").verify()
    assert not report.ok and not report.chain_ok
    # the next group's prev no longer matches the edited group's bytes
    assert report.problems == [
        "segment 000000 group 3 (seq 12..15): prev hash does not match the bytes of "
        "segment 000000 group 2 (seq 8..11) (a batch was edited, dropped, reordered "
        "or replaced)"
    ]


def test_verify_when_the_last_group_is_edited_then_manifest_head_does_not_match(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, compression=None)
    for n in range(16):
        writer.append(quote(n, price=1000 * n))
    writer.close()
    path = tmp_path / "run-1" / MARKET_DIR / "000000.arrow"
    data = path.read_bytes()
    needle = (15000).to_bytes(8, "little", signed=True)  # the bid_price of quote 15
    path.write_bytes(data.replace(needle, (7).to_bytes(8, "little", signed=True)))
    report = JournalReader(tmp_path / "run-1").verify()
    assert not report.chain_ok
    assert any("manifest head_hash is not the hash of the journal" in p for p in report.problems)


def test_verify_when_a_batch_is_dropped_then_the_gap_and_broken_link_are_named(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=4)
    write_run(writer, 12)
    writer.close()
    path = tmp_path / "run-1" / "000000.arrow"
    rewrite_sealed(path, lambda batches: batches[:1] + batches[2:])
    report = JournalReader(tmp_path / "run-1").verify()
    assert not report.ok and not report.chain_ok
    text = "\n".join(report.problems)
    # the group that lost its batch of entries: its market data alone is not the group
    assert "segment 000000 group 1 (seq 4..7): its batches' seq columns are not 4..7" in text
    assert "segment 000000 group 2 (seq 8..11): prev hash does not match" in text
    assert "manifest says 16 entries" in text


def test_verify_when_batches_are_reordered_then_it_is_reported(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=4)
    write_run(writer, 12)
    writer.close()
    path = tmp_path / "run-1" / "000000.arrow"
    rewrite_sealed(path, lambda batches: [batches[1], batches[0], *batches[2:]])
    report = JournalReader(tmp_path / "run-1").verify()
    assert not report.chain_ok
    assert any("group 2 (seq 0..3): starts at seq 0, expected 8" in p for p in report.problems)


def test_verify_when_journal_is_intact_then_chain_links_from_genesis_to_manifest_head(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, segment_bytes=20_000)
    write_run(writer, 20)
    writer.close()
    reader = JournalReader(tmp_path / "run-1")
    metas = [
        meta
        for path in reader.segment_paths
        for meta in (
            pa.ipc.open_file(str(path)).get_batch_with_custom_metadata(i)[1]
            for i in range(pa.ipc.open_file(str(path)).num_record_batches)
        )
    ]
    market = sum(pa.ipc.open_file(str(path)).num_record_batches for path in reader.market_paths)
    assert metas[0][b"tape.prev"] == genesis_hash("run-1").hex().encode()
    assert len({meta[b"tape.prev"] for meta in metas}) == len(metas)  # a link per group
    report = reader.verify()
    assert report.ok and report.chain_ok and report.batches == len(metas) + market
    assert (report.first_ts, report.last_ts) == (0, 19)


# --- bad input ------------------------------------------------------------------------------


def test_writer_append_when_given_a_non_message_then_error_names_what_was_expected(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, manifest())
    with pytest.raises(
        CodecError, match=r"expected a message of a kind in messages\.KINDS, got dict"
    ):
        writer.append({"price": 1})  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"QuoteTick\.bid_size: expected int, got str"):
        writer.append(msgspec.structs.replace(quote(1), bid_size="3"))
    assert writer.append(quote(2)) == 0  # nothing half-written, seq not consumed
    writer.close()
    assert [e.msg for e in JournalReader(tmp_path / "run-1").entries()] == [quote(2)]


def test_writer_append_when_cause_is_not_an_earlier_seq_then_it_is_refused(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, manifest())
    seq = writer.append(quote(1))
    with pytest.raises(CodecError, match=r"cause: expected the seq of an earlier entry"):
        writer.append(OrderAccepted(ts_recv=1, order_id="o", venue="v"), seq + 1)
    with pytest.raises(CodecError, match=r"got -1"):
        writer.append(OrderAccepted(ts_recv=1, order_id="o", venue="v"), -1)
    writer.close()


def test_writer_when_a_value_overflows_int64_then_it_is_refused_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=2)
    writer.append(quote(1))
    with pytest.raises(CodecError, match=r"^QuoteTick\.ask_size: expected an int64"):
        writer.append(msgspec.structs.replace(quote(2), ask_size=2**64))
    with pytest.raises(CodecError, match=r"^QuoteTick\.venue: expected valid UTF-8 text"):
        writer.append(msgspec.structs.replace(quote(2), venue="V\ud800"))
    assert writer.append(quote(3)) == 1  # refused before it had a seq: nothing lost
    writer.close()
    assert [e.msg for e in JournalReader(tmp_path / "run-1").entries()] == [quote(1), quote(3)]


def test_writer_when_another_writer_has_the_run_open_then_it_refuses(tmp_path: Path) -> None:
    first = JournalWriter(tmp_path, manifest())
    with pytest.raises(JournalError, match="another JournalWriter has this run open"):
        JournalWriter(tmp_path, manifest())
    first.close()
    assert not (tmp_path / "run-1" / LOCK).exists()
    JournalWriter(tmp_path, manifest()).close()  # free again


def test_writer_when_closed_then_append_is_refused(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, manifest())
    writer.close()
    with pytest.raises(JournalError, match="closed"):
        writer.append(quote(1))


def test_reader_when_run_dir_has_no_manifest_then_error_names_the_directory(
    tmp_path: Path,
) -> None:
    with pytest.raises(JournalError, match=rf"{tmp_path}: no manifest\.json"):
        JournalReader(tmp_path)


def test_reader_when_format_version_is_unknown_then_error_names_both_versions(
    tmp_path: Path,
) -> None:
    data = msgspec.json.encode(msgspec.structs.replace(manifest(), format_version=99))
    (tmp_path / "manifest.json").write_bytes(data)
    with pytest.raises(
        JournalError, match=rf"format_version 99 is not supported.*version {FORMAT_VERSION}"
    ):
        JournalReader(tmp_path)


def test_reader_when_manifest_field_has_wrong_type_then_error_names_the_field(
    tmp_path: Path,
) -> None:
    fields = {
        "format_version": FORMAT_VERSION,
        "run_id": "r",
        "mode": "x",
        "seed": "x",
        "code_version": "c",
    }
    (tmp_path / "manifest.json").write_bytes(msgspec.json.encode(fields))
    with pytest.raises(
        JournalError, match=r"manifest\.json: Expected `int`, got `str` - at `\$\.seed`"
    ):
        JournalReader(tmp_path)


def test_writer_when_reopened_with_another_manifest_then_error_names_the_field(
    tmp_path: Path,
) -> None:
    JournalWriter(tmp_path, manifest()).close()
    with pytest.raises(JournalError, match="seed is 42 but the writer was given 7"):
        JournalWriter(tmp_path, manifest(seed=7))


def test_writer_when_directory_has_files_but_no_manifest_then_it_refuses(tmp_path: Path) -> None:
    (tmp_path / "run-1").mkdir()
    (tmp_path / "run-1" / "notes.txt").write_text("mine")
    with pytest.raises(JournalError, match=r"no manifest\.json"):
        JournalWriter(tmp_path, manifest())


@pytest.mark.parametrize("run_id", ["", "..", "a/b"])
def test_writer_when_run_id_is_not_a_plain_name_then_it_refuses(
    tmp_path: Path, run_id: str
) -> None:
    with pytest.raises(JournalError, match="run_id"):
        JournalWriter(tmp_path, manifest(run_id=run_id))


def test_verify_when_called_on_a_run_dir_then_same_report_as_the_reader(tmp_path: Path) -> None:
    with JournalWriter(tmp_path, manifest(), batch_size=4) as writer:
        write_run(writer, 5)
    assert verify(tmp_path / "run-1") == JournalReader(tmp_path / "run-1").verify()


def test_writer_when_restarted_after_a_crash_mid_seal_then_leftover_tmp_is_removed(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path / "live", manifest(), batch_size=4)
    appended = write_run(writer, 6)
    writer.flush()
    run_dir = crash_snapshot(writer, tmp_path / "crash")
    writer.close()
    (run_dir / "000000.arrow.tmp").write_bytes(b"half a sealed file")
    restarted = JournalWriter(tmp_path / "crash", manifest(), batch_size=4)
    assert restarted.torn is None
    restarted.close()
    assert segment_names(run_dir) == ["000000.arrow"]
    assert list(JournalReader(run_dir).entries()) == appended


def test_reader_when_a_sealed_segment_is_not_arrow_then_error_names_the_file(
    tmp_path: Path,
) -> None:
    JournalWriter(tmp_path, manifest()).close()
    (tmp_path / "run-1" / "000000.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(JournalError, match=r"000000\.arrow: not a readable Arrow IPC segment"):
        JournalReader(tmp_path / "run-1")


def test_writer_when_a_threaded_group_write_fails_then_the_next_call_raises_and_run_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under fsync "none" full groups are written by a thread: its failure is raised by the
    writer's next group or flush (not lost), the writer refuses what follows, and a new
    writer recovers every group written before."""
    from engine import journal as journal_module

    real = journal_module._Stream.write
    calls = 0

    def failing(self: Any, batch: pa.RecordBatch, meta: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(28, "No space left on device")
        real(self, batch, meta)

    monkeypatch.setattr(journal_module._Stream, "write", failing)
    monkeypatch.setattr(journal_module, "_THREAD_ROWS", 1)  # groups of 4 by the thread
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, fsync="none")
    for n in range(8):
        writer.append(quote(n))  # groups 0 and 1 written; group 1 by a thread
    with pytest.raises(OSError, match="No space left"):
        for n in range(8, 16):
            writer.append(quote(n))  # group 2 fails in its thread, raised at group 3
        writer.flush()
    with pytest.raises(JournalError, match="the writer failed earlier"):
        writer.append(quote(99))
    with pytest.raises(JournalError):
        writer.close()
    monkeypatch.setattr(journal_module._Stream, "write", real)
    again = JournalWriter(tmp_path, manifest(), batch_size=4, fsync="none")
    assert again.next_seq == 8  # groups 0 and 1
    again.close()
    reader = JournalReader(tmp_path / "run-1")
    assert [e.msg for e in reader.entries()] == [quote(n) for n in range(8)]
    assert reader.verify().ok


def threaded_groups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Have every full group of one entry or more written by the writer thread, and list
    one "group" per group it writes (the list returned)."""
    from engine import journal as journal_module

    threads: list[str] = []
    real = journal_module._GroupWrite.run_in_thread

    def counting(self: Any, *args: Any) -> None:
        threads.append("group")
        real(self, *args)

    monkeypatch.setattr(journal_module, "_THREAD_ROWS", 1)
    monkeypatch.setattr(journal_module._GroupWrite, "run_in_thread", counting)
    return threads


def test_writer_when_groups_written_by_a_thread_then_bytes_equal_written_in_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync "none" (groups by a thread) and "batch" (in line) write the same bytes."""
    threads = threaded_groups(monkeypatch)
    for policy in ("none", "batch"):
        with JournalWriter(tmp_path / policy, manifest(), batch_size=4, fsync=policy) as w:  # type: ignore[arg-type]
            write_run(w, 40)
    files = sorted(
        str(p.relative_to(tmp_path / "none")) for p in (tmp_path / "none").rglob("*.arrow")
    )
    assert files and "run-1/market/000000.arrow" in files
    for name in files:
        assert (tmp_path / "none" / name).read_bytes() == (tmp_path / "batch" / name).read_bytes()
    assert len(threads) == 13  # every full group of "none" (54 entries: 13 of 4, then 2)


def test_sealed_segments_when_run_is_open_then_sealed_pairs_before_the_open_one(
    tmp_path: Path,
) -> None:
    from engine.journal import sealed_segments

    writer = JournalWriter(tmp_path, manifest(), batch_size=8, segment_bytes=20_000)
    write_run(writer, 40)
    writer.flush()
    writer._join_sealer()
    run_dir = tmp_path / "run-1"
    pairs, complete = sealed_segments(run_dir)
    assert not complete and pairs
    assert [e.name for e, _ in pairs] == [n for n in segment_names(run_dir) if n.endswith(".arrow")]
    assert all(m == run_dir / MARKET_DIR / e.name for e, m in pairs)
    writer.close()
    pairs, complete = sealed_segments(run_dir)
    assert complete and [e for e, _ in pairs] == JournalReader(run_dir).sealed_paths


def test_writer_end_group_when_called_then_the_pending_entries_are_one_group_written_as_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`end_group` ends the group being gathered where it is called (under "none" by the
    thread, as a full group), does nothing with nothing pending, and refuses once closed."""
    threads = threaded_groups(monkeypatch)
    writer = JournalWriter(tmp_path, manifest(), batch_size=100, fsync="none")
    for n in range(3):
        writer.append(quote(n))
    assert writer.pending == 3
    writer.end_group()
    assert writer.pending == 0
    writer.end_group()  # nothing pending: no empty group
    for n in range(3, 8):
        writer.append(quote(n))
    writer.end_group()
    writer.close()
    assert threads == ["group", "group"]
    run_dir = tmp_path / "run-1"
    sealed = pa.ipc.open_file(run_dir / MARKET_DIR / "000000.arrow")
    groups = [
        sealed.get_batch(i).column("seq").to_pylist() for i in range(sealed.num_record_batches)
    ]
    assert groups == [[0, 1, 2], [3, 4, 5, 6, 7]]
    reader = JournalReader(run_dir)
    assert [e.msg for e in reader.entries()] == [quote(n) for n in range(8)]
    assert reader.verify().ok
    with pytest.raises(JournalError, match="the writer is closed"):
        writer.end_group()


def test_group_writes_when_threaded_then_earlier_groups_pages_dropped_and_journal_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each threaded group write drops the cached pages of what came before it in each
    file (written out since: the writer never reads them again), from where the last
    drop ended: every byte before the last group once, in order; the journal reads back."""
    from engine import journal

    threads = threaded_groups(monkeypatch)
    advised: list[tuple[str, int, int, int]] = []

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        advised.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length, advice))

    monkeypatch.setattr(journal, "_FADVISE", fadvise)
    writer = JournalWriter(tmp_path, manifest(), batch_size=100, fsync="none")
    for group in range(4):
        for n in range(group * 10, group * 10 + 10):
            writer.append(quote(n, price=100 + n % 7))
        writer.end_group()
    writer.close()
    assert threads == ["group"] * 4
    assert {advice for *_, advice in advised} == {os.POSIX_FADV_DONTNEED}
    (path,) = {name for name, *_ in advised}  # the market-data file: quotes only
    assert path.endswith(f"{MARKET_DIR}/000000{journal.OPEN_SUFFIX}")
    spans = [(offset, length) for _, offset, length, _ in advised]
    assert len(spans) == 4  # each group drops what came before it (the first: the magic)
    assert spans[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(spans))
    assert (
        spans[-1][0] + spans[-1][1]
        < (tmp_path / "run-1" / MARKET_DIR / "000000.arrow").stat().st_size
    )
    reader = JournalReader(tmp_path / "run-1")
    assert [e.msg for e in reader.entries()] == [quote(n, price=100 + n % 7) for n in range(40)]
    assert reader.verify().ok


def test_market_table_when_written_then_instrument_and_venue_are_the_runs_dictionaries(
    tmp_path: Path,
) -> None:
    """The market-data table codes instrument and venue in the run's dictionaries (its
    instruments, the venues they list); a quote of another instrument stays in the wide
    table; readers see strings; verify checks the dictionaries against the manifest."""
    with JournalWriter(tmp_path, manifest(), batch_size=4) as writer:
        for n in range(6):
            writer.append(quote(n))
        other = msgspec.structs.replace(quote(6), instrument="ETH-USD")
        writer.append(other)
    run_dir = tmp_path / "run-1"
    market = pa.ipc.open_file(run_dir / MARKET_DIR / "000000.arrow").read_all()
    assert market.num_rows == 6
    assert market.schema.field("instrument").type == pa.dictionary(pa.int32(), pa.utf8())
    assert market.column("instrument").chunk(0).dictionary.to_pylist() == ["BTC-USD"]
    assert market.column("venue").chunk(0).dictionary.to_pylist() == ["sim"]
    wide = pa.ipc.open_file(run_dir / "000000.arrow").read_all()
    assert wide.column("instrument").to_pylist() == ["ETH-USD"]
    reader = JournalReader(run_dir)
    assert [e.msg for e in reader.entries()] == [*(quote(n) for n in range(6)), other]
    assert reader.verify().ok
    # the manifest names other instruments: the market file's dictionary is not the run's
    stored = read_manifest(run_dir)
    renamed = [{**i, "instrument": "SOL-USD"} for i in stored.instruments]
    (run_dir / "manifest.json").write_bytes(
        msgspec.json.encode(msgspec.structs.replace(stored, instruments=renamed))
    )
    problems = JournalReader(run_dir).verify().problems
    assert any("dictionary of column 'instrument' is not the run's" in p for p in problems)
