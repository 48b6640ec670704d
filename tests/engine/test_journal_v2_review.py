"""Review of journal format v2 (entries file + market-data file per segment): crashes at
every point of a group write, crashes during rotation, segments with one table only,
reopening, tampering, the threaded group write, and live-style appends."""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from engine import journal as journal_module
from engine import messages as m
from engine.codec import MARKET_KINDS, MARKET_SCHEMA, SCHEMA, Entry
from engine.journal import MARKET_DIR, JournalError, JournalReader, JournalWriter, Manifest
from tests.engine.test_journal_bulk import manifest as one_instrument

RUN = "run-v2"
EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def manifest() -> Manifest:
    return one_instrument(RUN)


def make(kind: str, ts: int) -> m.Message:
    """q quote, t trade, d book delta (market data), o order, a alert."""
    common = {"ts_recv": ts, "instrument": "X", "venue": "V"}
    if kind in "qc":
        return m.QuoteTick(
            **common, bid_price=1000 + ts, bid_size=1, ask_price=2000 + ts, ask_size=2
        )
    if kind == "t":
        return m.TradeTick(**common, price=ts, qty=3)
    if kind == "d":
        return m.BookDelta(**common, side=m.Side.SELL, price=ts, qty=1)
    if kind == "o":
        return m.SubmitOrder(
            **common, order_id=f"o{ts}", account="a", strategy="s", side=m.Side.BUY, qty=1,
            order_type=m.OrderType.LIMIT, price=100, tif=m.TimeInForce.GTC,
        )  # fmt: skip
    return m.Alert(ts_recv=ts, severity=m.Severity.INFO, code="C", text=f"t{ts}")


def put(writer: JournalWriter, kinds: str, ts: int = 0) -> list[Entry]:
    """Append one entry per letter (see `make`; c: a quote caused by the entry before, which
    stays in the entries file); return them."""
    out = []
    for n, kind in enumerate(kinds):
        cause = (out[-1].seq if out else writer.next_seq - 1) if kind == "c" else None
        msg = make(kind, ts + n)
        out.append(Entry(writer.append(msg, cause), cause, msg))
    return out


def run_dir(root: Path) -> Path:
    return root / RUN


def batch_ends(path: Path) -> list[int]:
    """Where each record-batch message of an open file (magic, then a stream) ends."""
    found = journal_module._scan(pa.py_buffer(path.read_bytes()[8:]))[0]
    return [8 + at + meta + body for kind, at, meta, body in found if kind == "record batch"]


def snapshot(writer: JournalWriter, into: Path) -> Path:
    """The run directory as a crash of the writer's process leaves it."""
    shutil.copytree(writer.run_dir, into / RUN)
    return into


def check_ok(root: Path, expected: list[Entry]) -> JournalReader:
    reader = JournalReader(run_dir(root))
    assert list(reader.entries()) == expected
    report = reader.verify()
    assert report.ok and report.chain_ok, report.problems
    assert report.entries == len(expected)
    return reader


def record_io(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the journal's fsyncs ("fsync <file>") and renames ("replace <file>")."""
    events: list[str] = []
    fsync, replace = journal_module.os.fsync, journal_module.os.replace

    def recording_fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}").rsplit(RUN + "/", 1)[-1])
        fsync(fd)

    def recording_replace(src: Any, dst: Any) -> None:
        events.append("replace " + str(dst).rsplit(RUN + "/", 1)[-1])
        replace(src, dst)

    monkeypatch.setattr(journal_module.os, "fsync", recording_fsync)
    monkeypatch.setattr(journal_module.os, "replace", recording_replace)
    return events


# --- 1. a crash at every point of a group write -----------------------------------------------

PREFIX = "qqoo" + "oaoa" + "qtdq"  # groups of 4: both files, entries only, market data only
LAST = {"both": "qoqo", "entries": "oaoa", "market": "tqdq"}


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Entry]]]:
    """For each kind of last group: a crash snapshot with every group whole."""
    out = {}
    for name, last in LAST.items():
        tmp = tmp_path_factory.mktemp(name)
        writer = JournalWriter(tmp / "live", manifest(), batch_size=4, compression=None)
        appended = put(writer, PREFIX + last)
        out[name] = (snapshot(writer, tmp / "crash"), appended)
        writer.close()
    return out


# (last group, which file is cut, where: a fraction of the last batch's bytes, 0 = none)
# entries 0.0: the market batch whole, the entries batch not yet written; market: the
# market batch torn, the entries batch not yet written
CUTS = [("both", "entries", f) for f in (0.0, 0.01, 0.5, 0.999)] + [
    ("both", "market", 0.5), ("both", "market", 0.999), ("entries", "entries", 0.3),
    ("market", "market", 0.3), ("market", "market", 0.0),
]  # fmt: skip


@pytest.mark.parametrize("case", CUTS)
def test_crash_mid_group_then_reader_stops_at_last_whole_group_and_restart_continues(
    tmp_path: Path, crashed: dict[str, tuple[Path, list[Entry]]], case: tuple[str, str, float]
) -> None:
    last, which, fraction = case
    source, appended = crashed[last]
    root = tmp_path / "run"
    shutil.copytree(source, root)
    entries_file = run_dir(root) / "000000.arrows"
    market_file = run_dir(root) / MARKET_DIR / "000000.arrows"
    cut = {}  # file -> (good bytes, the bytes cut)
    for path, kinds in ((entries_file, "oac"), (market_file, "qtd")):
        if not any(k in kinds for k in LAST[last]):
            continue  # the last group has no batch in this file
        ends = batch_ends(path)
        start, end = ends[-2], ends[-1]
        if path == (entries_file if which == "entries" else market_file):
            size = start + int((end - start) * fraction)
        else:  # the other file: its batch came first (kept whole) or never came
            size = end if path == market_file else start
        data = path.read_bytes()
        path.write_bytes(data[:size])
        cut[path] = (start, data[start:size])  # on disk after the last whole group
    whole = appended[:12]
    reader = check_ok(root, whole)
    names = {entries_file: "000000.arrows", market_file: f"{MARKET_DIR}/000000.arrows"}
    expected = [
        journal_module.TornTail(names[p], start, len(data), 11)
        for p, (start, data) in sorted(cut.items(), key=lambda i: i[0] != market_file)
        if data
    ]
    assert reader.torn == expected
    assert reader.tail(3) == whole[-3:]
    assert reader.counts_by_kind() == Counter(type(e.msg).__name__ for e in whole)

    writer = JournalWriter(root, manifest(), batch_size=4)
    assert writer.next_seq == 12
    assert writer.torn == (expected[-1] if expected else None)
    for path, (_, data) in cut.items():
        torn = path.with_suffix(".torn")
        assert torn.read_bytes() == data if data else not torn.exists()
    more = put(writer, "qoqa", ts=100)
    writer.close()
    check_ok(root, whole + more)


# --- 2. a crash during rotation: one file of a segment sealed, the other still open ----------


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Entry]]:
    """Segment 0 open (a crash snapshot), and the same run later: segment 0 sealed and
    segment 1 open with more groups (a crash snapshot)."""
    tmp = tmp_path_factory.mktemp("rotated")
    writer = JournalWriter(tmp / "live", manifest(), batch_size=4)
    appended = put(writer, "qqoo" + "qtdq" + "oaqo")
    writer.flush()
    before = snapshot(writer, tmp / "open")
    writer.close()
    writer = JournalWriter(tmp / "live", manifest(), batch_size=4)
    appended += put(writer, "qoqo" + "tdtd", ts=100)
    writer.flush()
    after = snapshot(writer, tmp / "sealed")
    writer.close()
    return before, after, appended


def mid_rotation(root: Path, rotated: tuple[Path, Path, list[Entry]], name: str) -> bytes:
    """`rotated`'s later snapshot at `root`, but the segment 0 file `name` (sealed) as it was
    before its seal (open); return that open file's bytes."""
    before, after, _ = rotated
    shutil.copytree(after, root, dirs_exist_ok=True)
    (run_dir(root) / name).unlink()
    shutil.copy(run_dir(before) / (name + "s"), run_dir(root) / (name + "s"))
    return (run_dir(root) / (name + "s")).read_bytes()


@pytest.mark.parametrize("name", ["000000.arrow", f"{MARKET_DIR}/000000.arrow"])
def test_crash_mid_rotation_when_one_file_is_sealed_then_reader_and_restart_handle_it(
    tmp_path: Path, rotated: tuple[Path, Path, list[Entry]], name: str
) -> None:
    appended = rotated[2]
    mid_rotation(tmp_path, rotated, name)  # the other file of segment 0 sealed
    reader = check_ok(tmp_path, appended)
    assert reader.torn == [] and reader.tail(5) == appended[-5:]
    writer = JournalWriter(tmp_path, manifest(), batch_size=4)
    assert writer.next_seq == len(appended) and writer.torn is None
    more = put(writer, "qo", ts=200)
    writer.close()
    reader = check_ok(tmp_path, appended + more)
    assert [p.name for p in reader.sealed_paths] == ["000000.arrow", "000001.arrow", "000002.arrow"]
    assert [p.name for p in reader.sealed_market_paths] == [p.name for p in reader.sealed_paths]


def test_crash_mid_rotation_when_sealed_market_outlived_its_entries_then_no_half_group(
    tmp_path: Path, rotated: tuple[Path, Path, list[Entry]]
) -> None:
    """A sealed market-data file holding a batch whose entries batch is torn (what a power
    loss would leave if the entries file were not on disk before the market-data file was
    sealed) is refused: never replayed as a half group, never continued by a writer."""
    stream = run_dir(tmp_path) / "000000.arrows"
    data = mid_rotation(tmp_path, rotated, "000000.arrow")
    stream.write_bytes(data[: batch_ends(stream)[-2] + 10])
    match = r"market/000000\.arrow: sealed, yet it holds batches of a group that is not whole"
    with pytest.raises(JournalError, match=match):
        JournalReader(run_dir(tmp_path))
    with pytest.raises(JournalError, match=match):
        JournalWriter(tmp_path, manifest(), batch_size=4)


def test_reader_when_writer_rotates_between_its_two_files_then_no_half_group(
    tmp_path: Path, rotated: tuple[Path, Path, list[Entry]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader reads a live segment's entries file; the writer then finishes a group,
    ends both streams and seals the market-data file before the reader looks for it."""
    stream = run_dir(tmp_path) / "000000.arrows"
    data = mid_rotation(tmp_path, rotated, "000000.arrow")
    cut = batch_ends(stream)[-2]
    stream.write_bytes(data[:cut])  # the last group's entries batch not yet written
    real = journal_module._market_file

    def rotating(path: Path) -> Path | None:
        if path == stream and path.stat().st_size == cut:
            with open(path, "ab") as f:
                f.write(data[cut:] + EOS)  # the writer goes on: the batch, the end of stream
        return real(path)

    monkeypatch.setattr(journal_module, "_market_file", rotating)
    assert check_ok(tmp_path, rotated[2]).torn == []


def test_rotation_when_fsync_none_then_entries_file_on_disk_before_market_file_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order that keeps the state above from arising: under fsync "none" a rotated
    segment's files are fsynced only when sealed, and the market-data file is sealed first,
    so its entries file must be fsynced before that seal."""
    events = record_io(monkeypatch)
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, fsync="none", segment_bytes=1)
    put(writer, "qoqo")  # the group fills segment 0: sealed in the background
    writer.close()
    assert events.index("fsync 000000.arrows") < events.index(f"replace {MARKET_DIR}/000000.arrow")


# --- 3. segments with one table only ------------------------------------------------------------


def test_segment_without_market_data_then_one_with_only_market_data_read_right(
    tmp_path: Path,
) -> None:
    with JournalWriter(tmp_path, manifest(), batch_size=3) as writer:
        first = put(writer, "oaoaoao")  # groups of 3, 3 and 1: entries only
    with JournalWriter(tmp_path, manifest(), batch_size=3) as writer:
        second = put(writer, "qtdqtdqt", ts=100)  # market data only
    run = run_dir(tmp_path)
    assert sorted(p.name for p in (run / MARKET_DIR).iterdir()) == ["000001.arrow"]
    assert pa.ipc.open_file(str(run / "000001.arrow")).num_record_batches == 0
    appended = first + second
    reader = check_ok(tmp_path, appended)
    assert [p.name for p in reader.market_paths] == ["000001.arrow"]
    for n in (0, 1, 3, 8, 9, 10, 15, 100):
        assert reader.tail(n) == appended[-n:] if n else reader.tail(n) == []
    assert reader.counts_by_kind() == {
        "QuoteTick": 3, "TradeTick": 3, "BookDelta": 2, "SubmitOrder": 4, "Alert": 3
    }  # fmt: skip
    assert [b.num_rows for b in reader.batches()] == [3, 3, 1, 3, 3, 2]

    # then a crash tears the first group of the next segment: the whole groups end at the
    # last market data of segment 1, for the reader as for a restarted writer
    writer = JournalWriter(tmp_path, manifest(), batch_size=3)
    put(writer, "oqo", ts=200)
    writer.flush()
    crash = snapshot(writer, tmp_path / "crash")
    writer.close()
    stream = run_dir(crash) / "000002.arrows"
    stream.write_bytes(stream.read_bytes()[:-5])
    reader = check_ok(crash, appended)
    restarted = JournalWriter(crash, manifest(), batch_size=3)
    assert [t.last_good_seq for t in reader.torn] == [len(appended) - 1] * 2
    assert restarted.torn is not None and restarted.torn.last_good_seq == len(appended) - 1
    restarted.close()
    check_ok(crash, appended)


# --- 4. reopening after clean closes ------------------------------------------------------------


def test_reopen_after_clean_closes_then_head_hash_manifest_and_verify_agree(tmp_path: Path) -> None:
    appended: list[Entry] = []
    heads = []
    for n, kinds in enumerate(["qoqt", "", "oaoa", "tdtd", "qcqc", "", "q", "o"]):
        writer = JournalWriter(tmp_path, manifest(), batch_size=3)
        assert writer.next_seq == len(appended)
        if heads:
            assert writer.head_hash == heads[-1]  # continued from the bytes on disk
        appended += put(writer, kinds, ts=100 * n)
        writer.flush()
        head = writer.head_hash
        writer.close()
        assert writer.head_hash == head
        stored = journal_module.read_manifest(run_dir(tmp_path))
        assert stored.status == "closed" and stored.head_hash == head
        assert stored.entries == len(appended)
        heads.append(head)
        check_ok(tmp_path, appended)
    assert len(set(heads)) == 6  # the runs that appended nothing kept the head


# --- 5. tampering with sealed files --------------------------------------------------------------


def rewrite(path: Path, schema: pa.Schema, order: Any) -> None:
    """Rewrite a sealed file with its (batch, metadata) pairs reordered by `order`."""
    reader = pa.ipc.open_file(pa.py_buffer(path.read_bytes()))
    batches = [reader.get_batch_with_custom_metadata(i) for i in range(reader.num_record_batches)]
    with pa.ipc.new_file(str(path), schema) as writer:
        for batch, meta in order(batches):
            writer.write_batch(batch, custom_metadata=meta)


def edit(path: Path, old: bytes | int, new: bytes = b"") -> None:
    """Replace the one `old` in the file (with `new`), or cut `old` (an int) bytes off it."""
    data = path.read_bytes()
    if isinstance(old, int):
        path.write_bytes(data[:-old])
        return
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


M0, M1 = f"{MARKET_DIR}/000000.arrow", f"{MARKET_DIR}/000001.arrow"
TAMPER: dict[str, Any] = {
    "delete market file of a middle segment": lambda r: (r / M0).unlink(),
    "delete market file of the last segment": lambda r: (r / M1).unlink(),
    "delete entries file of a middle segment": lambda r: (r / "000000.arrow").unlink(),
    "swap two market batches": lambda r: rewrite(r / M0, MARKET_SCHEMA, lambda b: [b[1], b[0]]),
    "swap the market batches of the last segment": lambda r: rewrite(
        r / M1, MARKET_SCHEMA, lambda b: b[::-1]
    ),
    "drop the last market batch": lambda r: rewrite(r / M1, MARKET_SCHEMA, lambda b: b[:-1]),
    "swap two entries batches": lambda r: rewrite(
        r / "000000.arrow", SCHEMA, lambda b: [b[1], b[0], *b[2:]]
    ),
    "edit an entries batch": lambda r: edit(r / "000000.arrow", b"t11", b"x11"),
    "edit the last entries batch": lambda r: edit(r / "000001.arrow", b"t107", b"x107"),
    "edit a market batch": lambda r: edit(r / M0, b"\xec\x03\x00\x00", b"\xed\x03\x00\x00"),
    "truncate a sealed entries file": lambda r: edit(r / "000000.arrow", 12),
    "truncate a sealed market file": lambda r: edit(r / M1, 1),
    "cut a sealed market file to its stream": lambda r: edit(r / M0, 300),
    "entries file of a segment swapped for the other's": lambda r: shutil.copy(
        r / "000001.arrow", r / "000000.arrow"
    ),
}


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Entry]]:
    tmp = tmp_path_factory.mktemp("sealed")
    with JournalWriter(tmp, manifest(), batch_size=4, compression=None) as writer:
        appended = put(writer, "qqoo" + "qtdq" + "oaoa" + "qoqo")
    with JournalWriter(tmp, manifest(), batch_size=4, compression=None) as writer:
        appended += put(writer, "qtdq" + "oaoa" + "tqdd", ts=100)
    return tmp, appended


@pytest.mark.parametrize("how", list(TAMPER))
def test_tampering_when_a_sealed_file_is_changed_then_verify_never_says_ok(
    tmp_path: Path, sealed: tuple[Path, list[Entry]], how: str
) -> None:
    source, appended = sealed
    check_ok(source, appended)
    shutil.copytree(source, tmp_path / "t")
    TAMPER[how](run_dir(tmp_path / "t"))
    try:
        report = journal_module.verify(run_dir(tmp_path / "t"))
    except JournalError:
        return  # refusing to read it is fine: saying it is fine is not
    assert not report.ok, report


# --- 6. groups written by a thread (fsync "none") ----------------------------------------------


@pytest.fixture
def threaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full group written by the thread; the fsyncs and renames (`record_io`)."""
    monkeypatch.setattr(journal_module, "_THREAD_ROWS", 1)
    return record_io(monkeypatch)


def test_thread_when_flush_durable_or_close_after_async_groups_then_all_is_on_disk(
    tmp_path: Path, threaded: list[str]
) -> None:
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, fsync="none")
    appended = put(writer, "qoqo" + "tdtd" + "oaoa")  # three groups, each by the thread
    del threaded[:]
    writer.flush(durable=True)
    assert {"fsync 000000.arrows", f"fsync {MARKET_DIR}/000000.arrows"} <= set(threaded)
    check_ok(snapshot(writer, tmp_path / "crash"), appended)
    appended += put(writer, "qoqc" + "tdtd", ts=20)  # closed while the thread writes
    writer.close()
    reader = check_ok(tmp_path, appended)
    assert [p.name for p in reader.sealed_paths] == ["000000.arrow"]
    assert journal_module.read_manifest(run_dir(tmp_path)).head_hash == writer.head_hash


def test_thread_when_flush_durable_while_rotated_segment_seals_then_it_is_on_disk_first(
    tmp_path: Path, threaded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under "none" a rotated segment is fsynced only by its (background) seal: a durable
    flush must not return before it, or a power loss could keep the next segment's groups
    and lose the ones before them."""
    release, sealed = threading.Event(), threading.Event()
    real = journal_module._seal_files

    def slow(*args: Any) -> None:
        release.wait(10)
        real(*args)
        sealed.set()

    monkeypatch.setattr(journal_module, "_seal_files", slow)
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, fsync="none", segment_bytes=1)
    appended = put(writer, "qoqo")  # the group fills segment 0: its seal is slow
    del threaded[:]
    timer = threading.Timer(0.2, release.set)
    timer.start()
    writer.flush(durable=True)  # nothing pending, no open segment
    assert sealed.is_set()
    assert {"fsync 000000.arrows", f"fsync {MARKET_DIR}/000000.arrows"} <= set(threaded)
    writer.close()
    timer.join()
    check_ok(tmp_path, appended)


@pytest.mark.parametrize("failing", [1, 2])  # the group's market batch, or its entries batch
def test_thread_when_a_group_write_fails_midway_then_raised_refused_and_recovered(
    tmp_path: Path, threaded: list[str], monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    real = journal_module._Stream.write
    calls = 0

    def write(self: Any, batch: pa.RecordBatch, meta: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2 + failing:  # the second group: market batch (3), entries batch (4)
            raise OSError(28, "No space left on device")
        real(self, batch, meta)

    monkeypatch.setattr(journal_module._Stream, "write", write)
    writer = JournalWriter(tmp_path, manifest(), batch_size=4, fsync="none")
    appended = put(writer, "qoqo")
    put(writer, "qaqa", ts=10)  # written (and failing) in the thread
    with pytest.raises(OSError, match="No space"):
        put(writer, "oooo", ts=20)  # the next group joins the thread and raises
    with pytest.raises(JournalError, match="failed earlier"):
        writer.append(make("q", 99))
    with pytest.raises(JournalError, match="failed earlier"):
        writer.flush(durable=True)
    with pytest.raises(JournalError, match="failed earlier"):
        writer.close()
    monkeypatch.setattr(journal_module._Stream, "write", real)
    again = JournalWriter(tmp_path, manifest(), batch_size=4, fsync="none")
    assert again.next_seq == 4
    assert (again.torn is not None) == (failing == 2)  # a market batch without its entries
    more = put(again, "oqoq", ts=30)
    again.close()
    check_ok(tmp_path, appended + more)


def test_writer_when_close_or_construction_fails_then_the_run_is_not_kept_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close "closes its files and releases the run, then raises", also when its own write
    of the pending entries fails; a writer refused at construction holds no flock either:
    the process can open the run right after."""
    writer = JournalWriter(tmp_path, manifest(), batch_size=4)
    appended = put(writer, "qoqo")
    put(writer, "qa", ts=10)  # pending
    with monkeypatch.context() as patch:
        patch.setattr(journal_module, "assemble_split", lambda *_: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            writer.close()
    with pytest.raises(JournalError, match="failed earlier"):
        writer.append(make("q", 99))
    with pytest.raises(JournalError, match="seed is 0 but the writer was given 8"):
        JournalWriter(tmp_path, msgspec.structs.replace(manifest(), seed=8))
    with JournalWriter(tmp_path, manifest(), batch_size=4) as again:
        assert again.next_seq == 4
        appended += put(again, "oq", ts=20)
    check_ok(tmp_path, appended)


# --- 7. live-style appends ----------------------------------------------------------------------

LIVE = "qqcotqdcoaqqqdddoc" + "q" * 7 + "o" + "tc" * 3 + "a"


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("fsync", ["always", "none"])
def test_live_appends_when_market_data_interleaves_with_orders_then_replay_is_exact(
    tmp_path: Path, batch_size: int, fsync: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "_THREAD_ROWS", 1)  # "none": full groups threaded
    writer = JournalWriter(tmp_path, manifest(), batch_size=batch_size, fsync=fsync)
    appended: list[Entry] = []
    for n, kind in enumerate(LIVE):  # c: a quote with a cause, kept in the entries file
        appended += put(writer, kind, ts=n)
        if n % 7 == 6:
            writer.flush(durable=n % 2 == 0)
            crash = snapshot(writer, tmp_path / f"crash{n}")
            check_ok(crash, appended)  # what a crash now would leave: every entry so far
    writer.close()
    reader = check_ok(tmp_path, appended)
    assert [e.seq for e in appended] == list(range(len(appended)))
    in_market = sum(
        pa.ipc.open_file(str(p)).read_all().num_rows for p in reader.sealed_market_paths
    )
    assert in_market == sum(1 for e in appended if e.cause is None and e.msg.__class__ in
                            MARKET_KINDS)  # fmt: skip
    assert reader.tail(4) == appended[-4:]
    again = JournalWriter(tmp_path, manifest(), batch_size=batch_size, fsync=fsync)
    more = put(again, "qcoq", ts=1000)
    again.close()
    check_ok(tmp_path, appended + more)
