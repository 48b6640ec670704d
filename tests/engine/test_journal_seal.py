"""Sealing: the sealed IPC file is byte for byte what pyarrow's file writer makes of the
stream's batches, whether sealed in place at close or rotation, or by copy after a torn
tail or an interrupted seal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from engine.codec import SCHEMA
from engine.journal import Compression, JournalReader, JournalWriter, Manifest
from engine.messages import QuoteTick, Side, Signal
from tests.engine.test_journal_bulk import manifest as one_instrument


def manifest() -> Manifest:
    return one_instrument("seal")


def fill(writer: JournalWriter, count: int) -> None:
    """Append `count` entries, quotes and every fourth one a signal."""
    for n in range(count):
        if n % 4:
            writer.append(
                QuoteTick(
                    ts_recv=n,
                    instrument="X",
                    venue="V",
                    bid_price=n,
                    bid_size=1,
                    ask_price=None,
                    ask_size=2,
                )
            )
        else:
            sig = Signal(
                ts_recv=n, signal_id=f"s{n}", strategy="a", account="A", instrument="X",
                side=Side.BUY, qty=n + 1,
            )  # fmt: skip
            writer.append(sig)


def rewritten(stream: Path, compression: str | None) -> bytes:
    """What pyarrow's IPC file writer makes of a stream's batches and their metadata."""
    data = stream.read_bytes()
    assert data[:8] == b"ARROW1\x00\x00"  # an open segment starts with the file magic
    reader = pa.ipc.open_stream(pa.py_buffer(data[8:]))
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression, use_threads=False)
    with pa.ipc.new_file(sink, SCHEMA, options=options) as writer:
        while True:
            try:
                batch, meta = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            writer.write_batch(batch, custom_metadata=meta)
    return bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("compression", ["lz4", None])
@pytest.mark.parametrize(("batch_size", "count"), [(1, 3), (7, 60), (4096, 5000)])
def test_close_when_segment_has_batches_then_sealed_bytes_equal_pyarrow_file_writer(
    tmp_path: Path, compression: Compression, batch_size: int, count: int
) -> None:
    writer = JournalWriter(
        tmp_path, manifest(), batch_size=batch_size, compression=compression, fsync="none"
    )
    fill(writer, count)
    writer.flush()
    stream = tmp_path / "seal" / "000000.arrows"
    shutil.copy(stream, tmp_path / "copy.arrows")
    inode = stream.stat().st_ino
    writer.close()
    assert (tmp_path / "seal" / "000000.arrow").stat().st_ino == inode  # sealed in place
    sealed = (tmp_path / "seal" / "000000.arrow").read_bytes()
    assert sealed == rewritten(tmp_path / "copy.arrows", compression)
    assert not stream.exists()
    assert JournalReader(tmp_path / "seal").verify().ok


def test_rotation_when_segments_fill_then_each_sealed_file_indexes_its_batches(
    tmp_path: Path,
) -> None:
    with JournalWriter(tmp_path, manifest(), batch_size=16, segment_bytes=40_000) as writer:
        fill(writer, 1_008)
    reader = JournalReader(tmp_path / "seal")
    assert len(reader.sealed_paths) > 2 and reader.sealed_paths == reader.segment_paths
    assert len(reader.sealed_market_paths) == len(reader.sealed_paths)
    for path, market in zip(reader.sealed_paths, reader.sealed_market_paths):
        file, market_file = pa.ipc.open_file(str(path)), pa.ipc.open_file(str(market))
        rows = [file.get_batch(i).num_rows for i in range(file.num_record_batches)]
        quotes = [market_file.get_batch(i).num_rows for i in range(file.num_record_batches)]
        # each group of 16: 4 signals in the entries file, 12 quotes in the market file
        assert rows and set(rows) == {4} and set(quotes) == {12}
    report = reader.verify()
    assert report.ok and report.entries == 1_008, report.problems


def test_restart_when_tail_was_torn_then_recovered_segment_sealed_as_pyarrow_would(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path / "live", manifest(), batch_size=5, fsync="none")
    fill(writer, 23)
    writer.flush()
    crashed = tmp_path / "crash"
    shutil.copytree(tmp_path / "live", crashed)
    writer.close()
    stream = crashed / "seal" / "000000.arrows"
    data = stream.read_bytes()
    stream.write_bytes(data[:-9])  # cut into the last batch
    (crashed / "seal" / "writer.lock").unlink(missing_ok=True)
    restarted = JournalWriter(crashed, manifest(), batch_size=5)
    assert restarted.torn is not None
    whole = stream.with_suffix(".whole")
    whole.write_bytes(data[: restarted.torn.good_bytes])
    restarted.close()
    assert (crashed / "seal" / "000000.arrow").read_bytes() == rewritten(whole, "lz4")
    assert JournalReader(crashed / "seal").verify().ok


def test_restart_when_seal_was_interrupted_then_not_torn_and_sealed_again(
    tmp_path: Path,
) -> None:
    """A crash while the footer was being appended leaves the stream, its EOS and part of
    the footer: every batch is whole (no torn tail), and a restarted writer seals it."""
    writer = JournalWriter(tmp_path / "live", manifest(), batch_size=5, fsync="none")
    fill(writer, 23)
    writer.flush()
    crashed = tmp_path / "crash"
    shutil.copytree(tmp_path / "live", crashed)
    writer.close()
    sealed = (tmp_path / "live" / "seal" / "000000.arrow").read_bytes()
    stream = crashed / "seal" / "000000.arrows"
    (crashed / "seal" / "writer.lock").unlink(missing_ok=True)
    stream.write_bytes(sealed[:-40])  # the footer cut short
    reader = JournalReader(crashed / "seal")
    assert reader.torn == [] and len(list(reader.entries())) == 23
    restarted = JournalWriter(crashed, manifest(), batch_size=5)
    assert restarted.torn is None and restarted.next_seq == 23
    restarted.close()
    assert (crashed / "seal" / "000000.arrow").read_bytes() == sealed
    assert not stream.exists()
    assert JournalReader(crashed / "seal").verify().ok
