"""The run journal: Arrow IPC segments plus manifest.json, one writer, many readers.

Layout of a run directory `<root>/<run_id>/`:
- `manifest.json`: a `Manifest`, always replaced atomically (tmp, fsync, rename).
- A segment is two files: `NNNNNN.arrow(s)`, every entry but market data, in
  `codec.SCHEMA`; and `market/NNNNNN.arrow(s)`, the market-data inputs (`codec.MARKET_KINDS`
  without a cause, of the run's instruments and venues) in the narrow `codec.MARKET_SCHEMA`
  (made with the segment's first market data). Market data is most of a run and uses ten
  columns of the sixty-odd: apart, it costs its own columns only. Its instrument and venue
  are coded in the run's dictionaries (`run_values`: the manifest's instruments, and the
  venues they list), the same in every file of the run; market data of any other
  instrument or venue is in the entries file, as text.
- `.arrows`: an open file: the IPC file magic, then an Arrow IPC stream that only ever
  grows. Only the last segment is open.
- `.arrow`: a sealed file in the IPC file format (Polars, pyarrow.dataset and DuckDB read
  these lazily). The file format is the stream's whole messages between the file magic and
  a footer indexing them, so the writer seals a file by appending the footer, fsyncing and
  renaming it: byte for byte what pyarrow's file writer makes of the same batches, without
  copying, decoding or recompressing them. A file left by a crash (a torn tail, an
  interrupted seal) is sealed by copying its whole messages into `.arrow.tmp`, fsync,
  rename, then deleting the `.arrows`; if both exist, the `.arrow` wins. A segment that
  reaches `segment_bytes` is sealed by a background thread (market data first) while
  appends go on in the next one (one seal at a time); `close` seals the last one and waits.
- `NNNNNN.torn`: bytes cut from a crashed writer's torn tail, kept for forensics.
- `writer.lock`: held (flock) by the one writer of an open run; gone after `close`.

Invariants:
- Inputs and effects share one `seq` order: 0, 1, 2, ... with no gap, across batches,
  both tables, segments and restarts. The writer assigns seq; `cause` is an earlier seq
  or None. Each file is in seq order; `JournalReader` merges them.
- Entries are written in groups (group commit) of `batch_size` entries (a flush or close
  writes a shorter one). A group is a batch in either file of the segment or one in each
  (market data first), each carrying the group's `tape.first_seq`, `tape.last_seq` and
  `tape.prev`: a group is whole when its batches hold last - first + 1 rows.
- The hash chain is over the bytes as written: after a group, the chain is sha256(prev,
  the group's bytes in the market-data file, its bytes in the entries file), where a
  group's bytes in a file run from the end of the file's previous batch message (or the
  end of the magic: the schema and dictionaries come with the first group) to the end of
  its own. The first prev is sha256(run_id); the manifest holds the head at close. So
  verifying reads bytes and hashes them (no decoding, whatever the compression), and an
  edited group shows as the next group's (or the manifest's) mismatch.
- Memory stays bounded by the batch: pending entries are builder rows and (rows, start,
  stop) slices of bulk `codec.Rows`; a batch is assembled column by column when written.
- A crash can only tear the end of the open segment's files, or leave one batch of a
  group without the other. Readers stop at the last whole group and report a `TornTail`
  per file cut; a restarted writer moves the cut bytes to `.torn` files, seals the whole
  groups and continues seq and hash chain in segment NNNNNN+1.
- Record batch buffers may be compressed (`compression="lz4"`, the default, or "zstd", or
  None); the chain covers the compressed bytes.
- fsync policy: "always" after every batch written; "batch" after each full batch, on
  rotation and on close; "none" only when sealing and closing. Under "none" the Arrow
  write of a full group runs in a thread while appends go on (one at a time, finished in
  order before the next group, a flush or a close, which raise its failure). `flush(durable=True)`
  always fsyncs (under "none", it also waits for the seal of a rotated segment, its fsync).
  A segment's other file is fsynced before its market-data file is sealed: a sealed file
  is never cut, so it must not outlive the other batch of a group. The manifest is fsynced
  on every write.
- Reopening a run (after a crash or a close) continues it in a new segment; the manifest
  given must match the stored one in everything but status, head_hash and entries.
- A writer that cannot write (an I/O error, a value Arrow refuses when the batch is
  built) refuses everything after: seqs were handed out that it cannot journal. Its
  `close` (or leaving its `with` block) closes its files and releases the run, then
  raises; what reached the disk stays readable, and a writer reopening the run (in this
  process or another) recovers it. Values only the batch build would refuse (an int
  past int64, text that is not UTF-8) are refused at `append`, before they get a seq.
- Segment files are created, appended to, renamed and deleted, never rewritten in place,
  so readers may memory-map them while a writer works.
- Nothing here reads the clock, draws random numbers or iterates a set.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import fcntl
import hashlib
import os
import struct
import threading
from collections import deque
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.codec import (
    DICTIONARIES,
    MARKET_DICTIONARIES,
    MARKET_SCHEMA,
    SCHEMA,
    BatchBuilder,
    CodecError,
    Encoder,
    Entry,
    Rows,
    RunValues,
    assemble_split,
    columns_rows,
    decode,
    merge,
    message_error,
)
from engine.messages import KIND_BY_NAME, KINDS, Message

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_COMPRESSION",
    "DEFAULT_SEGMENT_BYTES",
    "FORMAT_VERSION",
    "LOCK",
    "MARKET_DIR",
    "Compression",
    "FsyncPolicy",
    "JournalError",
    "JournalReader",
    "JournalWriter",
    "Manifest",
    "TornTail",
    "VerifyReport",
    "genesis_hash",
    "read_manifest",
    "sealed_segments",
    "verify",
]

FORMAT_VERSION = 3
DEFAULT_BATCH_SIZE = 4096
BUILDER_ROWS = 4096  # most entries the message-by-message builder holds before building
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
FsyncPolicy = Literal["always", "batch", "none"]
FSYNC_POLICIES: tuple[str, ...] = ("always", "batch", "none")
Compression = Literal["lz4", "zstd"] | None
COMPRESSIONS: tuple[str | None, ...] = ("lz4", "zstd", None)
DEFAULT_COMPRESSION: Compression = "lz4"
MANIFEST = "manifest.json"
LOCK = "writer.lock"
OPEN_SUFFIX = ".arrows"
SEALED_SUFFIX = ".arrow"
TORN_SUFFIX = ".torn"
MARKET_DIR = "market"  # the market-data files of the segments: <run>/market/NNNNNN.arrow(s)
_EOS_MARKERS = (b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00")
_EOS_BYTES = 8
_FILE_MAGIC = b"ARROW1\x00\x00"  # an IPC file starts with it (padded) and ends with its 6 bytes
_FIRST_SEQ = b"tape.first_seq"
_LAST_SEQ = b"tape.last_seq"
_PREV = b"tape.prev"
_IO_BUFFER = 1 << 20
_THREAD_ROWS = 1024  # smallest group written by a thread (a thread costs ~0.1-0.3 ms)
_READ_OPTIONS = pa.ipc.IpcReadOptions(use_threads=False)  # measured faster on few cores


class JournalError(Exception):
    """A journal that cannot be opened, written or read as asked."""


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a run was started with (its other inputs) and how its journal ended."""

    format_version: int = FORMAT_VERSION
    run_id: str
    mode: str  # "sim", "live", "replay", ...
    seed: int
    config: dict[str, Any] = {}
    instruments: list[dict[str, Any]] = []
    fill_model_hash: str | None = None
    code_version: str
    status: Literal["open", "closed"] = "open"
    head_hash: str | None = None  # hash chain head at close
    entries: int = 0  # entries at close


class TornTail(msgspec.Struct, frozen=True):
    """The end of an open segment file that is not part of a whole group (a crash
    mid-write): a partial message, or a market-data batch whose entries never came."""

    segment: str  # file name, e.g. "000003.arrows" or "market/000003.arrows"
    good_bytes: int  # length of the readable prefix
    cut_bytes: int  # bytes after it
    last_good_seq: int | None  # last seq of the whole batches before the cut, in the run

    def __str__(self) -> str:
        return (
            f"{self.segment}: {self.cut_bytes} bytes after byte {self.good_bytes} are not a "
            f"whole group; entries end at seq {self.last_good_seq}"
        )


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of `JournalReader.verify`: counts, ranges, torn tails and problems."""

    ok: bool  # no problems (a torn tail of an open run is not a problem)
    chain_ok: bool  # every batch hash recomputes and links to the previous one
    segments: int
    batches: int
    entries: int
    first_seq: int | None
    last_seq: int | None
    first_ts: int | None  # ts_recv of the first entry
    last_ts: int | None  # ts_recv of the last entry
    torn: list[TornTail]
    problems: list[str]


def genesis_hash(run_id: str) -> bytes:
    """Return the `prev` of a run's first batch."""
    return hashlib.sha256(run_id.encode()).digest()


def _group_hash(prev: bytes, market: Any, entries: Any) -> bytes:
    """Chain one group: sha256(prev, its bytes in the market-data file, its bytes in the
    entries file), bytes as written (see the module docstring)."""
    digest = hashlib.sha256(prev)
    digest.update(market)
    digest.update(entries)
    return digest.digest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(index: int, suffix: str) -> str:
    return f"{index:06d}{suffix}"


def _check_run_id(run_id: str) -> None:
    if not run_id or run_id in (".", "..") or "/" in run_id or "\\" in run_id:
        raise JournalError(
            f"manifest run_id: expected a non-empty name without path separators, got {run_id!r}"
        )


def _lock(run_dir: Path) -> int:
    """Take the run's writer lock (one writer per run); return the lock file's descriptor."""
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"{run_dir}: another JournalWriter has this run open") from None
    return fd


def _unlock(run_dir: Path, fd: int) -> None:
    (run_dir / LOCK).unlink()
    os.close(fd)  # releases the lock


# --- manifest -----------------------------------------------------------------------------


class _Version(msgspec.Struct):
    format_version: int


def run_values(manifest: Manifest) -> RunValues:
    """The dictionaries of a run's market-data instruments and venues: its instruments in
    manifest order, and the venues they list, sorted."""
    instruments = [str(i.get("instrument")) for i in manifest.instruments]
    venues = sorted({str(v) for i in manifest.instruments for v in i.get("venue_symbols") or {}})
    return RunValues(instruments, venues)


def read_manifest(run_dir: str | Path) -> Manifest:
    """Read and check `<run_dir>/manifest.json`."""
    path = Path(run_dir) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JournalError(
            f"{run_dir}: no {MANIFEST} (expected a run directory written by JournalWriter)"
        ) from None
    try:
        version = msgspec.json.decode(raw, type=_Version).format_version
    except msgspec.DecodeError as exc:
        raise JournalError(f"{path}: {exc}") from None
    if version != FORMAT_VERSION:
        raise JournalError(
            f"{path}: format_version {version} is not supported "
            f"(this code reads format_version {FORMAT_VERSION})"
        )
    try:
        return msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as exc:
        raise JournalError(f"{path}: {exc}") from None


def _write_manifest(run_dir: Path, manifest: Manifest) -> None:
    path = run_dir / MANIFEST
    tmp = run_dir / (MANIFEST + ".tmp")
    with open(tmp, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(manifest)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(run_dir)


_IDENTITY = (
    "format_version",
    "run_id",
    "mode",
    "seed",
    "config",
    "instruments",
    "fill_model_hash",
    "code_version",
)


# --- segments -------------------------------------------------------------------------------


def _segments(run_dir: Path) -> list[Path]:
    """Segment files in order; a sealed `.arrow` hides an `.arrows` of the same number."""
    found: dict[int, Path] = {}
    if not run_dir.is_dir():
        return []
    for path in sorted(run_dir.iterdir()):
        stem, suffix = path.stem, path.suffix
        if suffix not in (OPEN_SUFFIX, SEALED_SUFFIX) or len(stem) != 6 or not stem.isdigit():
            continue
        index = int(stem)
        if suffix == SEALED_SUFFIX or index not in found:
            found[index] = path
    return [found[i] for i in sorted(found)]


def sealed_segments(run_dir: str | Path) -> tuple[list[tuple[Path, Path | None]], bool]:
    """The run's segments sealed in both files, in order up to the first that is not:
    (entries file, market-data file or None) each; and whether that is every segment.

    No file is opened, and a writer sealing meanwhile is safe: each folder's open files
    are listed before its sealed ones, and the entries before the market data (the
    writer seals a segment's market data first), so a segment seen sealed stays so."""
    pattern = "[0-9]" * 6
    listed = []
    for folder in (Path(run_dir), Path(run_dir) / MARKET_DIR):
        opened = {p.stem for p in folder.glob(pattern + OPEN_SUFFIX)}
        listed.append((opened, {p.stem: p for p in folder.glob(pattern + SEALED_SUFFIX)}))
    (entries_open, entries), (market_open, market) = listed
    segments = sorted(entries_open | set(entries))
    sealed: list[tuple[Path, Path | None]] = []
    for stem in segments:
        if stem not in entries or (stem in market_open and stem not in market):
            break
        sealed.append((entries[stem], market.get(stem)))
    return sealed, len(sealed) == len(segments)


def _market_file(path: Path) -> Path | None:
    """The market-data file of the segment whose entries file is `path`, if it has one."""
    market = path.parent / MARKET_DIR / path.name
    # sealed, open, sealed again: a seal renames the open file between the first two
    for suffix in (SEALED_SUFFIX, OPEN_SUFFIX, SEALED_SUFFIX):
        candidate = market.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


Meta = dict[bytes, bytes]


def _meta_dict(meta: Any) -> Meta:
    return {} if meta is None else dict(meta.to_dict())


def _scan(data: Any) -> tuple[list[tuple[str, int, int, int]], int]:
    """The whole IPC messages at the start of `data` (type, offset, metadata bytes, body
    bytes each, zero-copy: no body is read) and where the last one ends."""
    source = pa.BufferReader(data)
    found: list[tuple[str, int, int, int]] = []
    good = 0
    try:
        messages = pa.ipc.MessageReader.open_stream(source)
        while True:
            message = messages.read_next_message()
            body = message.body.size if message.body else 0
            found.append((message.type, good, source.tell() - good - body, body))
            good = source.tell()
    except StopIteration:
        pass  # end of stream: EOS marker or a clean end after a whole message
    except (pa.ArrowInvalid, OSError):
        pass  # a partial message: torn, unless it is an EOS (see `_Segment`)
    return found, good


class _Segment:
    """One file of a segment opened for reading (memory-mapped): its schema and whole
    batches, the bytes each batch's group wrote to it, and (open files) a torn tail.

    Segment files are only ever created, appended to, renamed and deleted, never rewritten
    in place, so a mapping stays valid while a writer works on the run.
    """

    __slots__ = (
        "_data",
        "_file",
        "_spans",
        "_stream",
        "base",
        "clean_end",
        "expected",
        "messages",
        "name",
        "path",
        "schema",
        "torn_at",
    )

    def __init__(self, path: Path, expected: pa.Schema) -> None:
        self.path = path
        self.expected = expected  # SCHEMA (entries) or MARKET_SCHEMA (market data)
        self.name = path.name if expected is SCHEMA else f"{MARKET_DIR}/{path.name}"
        self.torn_at: tuple[int, int] | None = None  # (good_bytes, cut_bytes) of a stream
        self.base = 0  # where the messages start: 8, after the file magic
        self.clean_end = False  # an open segment ends with its last whole message (or EOS)
        # Whole messages: (type, offset from base, metadata bytes, body bytes) each.
        self.messages: list[tuple[str, int, int, int]] = []
        self._file: Any = None  # RecordBatchFileReader of a sealed segment
        self._stream: Any = None  # the whole messages of an open segment (a Buffer)
        self._data: Any = None  # the whole file, mapped
        self._spans: list[tuple[int, int]] | None = None
        try:
            if path.suffix == SEALED_SUFFIX:
                self._file = pa.ipc.open_file(pa.memory_map(str(path)), options=_READ_OPTIONS)
                self.schema = self._file.schema
            else:
                self._open_stream()
        except pa.ArrowException as exc:
            raise JournalError(f"{path}: not a readable Arrow IPC segment ({exc})") from None

    def _open_stream(self) -> None:
        """Find the end of the last whole message; what follows is torn, unless it is an
        EOS (a closed stream, maybe followed by part of the footer of an interrupted seal)."""
        size = self.path.stat().st_size
        data = pa.memory_map(str(self.path)).read_buffer() if size else pa.py_buffer(b"")
        self._data = data
        if data.size >= len(_FILE_MAGIC) and data.slice(0, len(_FILE_MAGIC)) == _FILE_MAGIC:
            self.base = len(_FILE_MAGIC)
            data = data.slice(self.base)
        self.messages, good = _scan(data)
        rest = data.slice(good, min(_EOS_BYTES, data.size - good)).to_pybytes()
        ended = rest == _EOS_MARKERS[0] or (rest == _EOS_MARKERS[1] and data.size - good == 4)
        if rest and not ended:
            self.torn_at = (self.base + good, size - self.base - good)
        self.clean_end = not rest or (ended and data.size - good == len(rest))
        self._stream = data.slice(0, good)
        self.schema = _open_stream(self._stream).schema if good else self.expected

    @property
    def messages_bytes(self) -> int:
        """Length of the whole messages at the start of an open segment."""
        return int(self._stream.size)

    @property
    def sealed(self) -> bool:
        return self._file is not None

    @property
    def batch_count(self) -> int:
        if self._file is not None:
            return int(self._file.num_record_batches)
        return sum(1 for m in self.messages if m[0] == "record batch")

    def batches(self) -> Iterator[tuple[pa.RecordBatch, Meta]]:
        """Yield (batch, custom metadata) for every whole batch, in order."""
        if self._file is not None:
            for i in range(self._file.num_record_batches):
                batch, meta = self._file.get_batch_with_custom_metadata(i)
                yield batch, _meta_dict(meta)
            return
        if not self._stream.size:
            return
        reader = _open_stream(self._stream)
        for _ in range(self.batch_count):
            batch, meta = reader.read_next_batch_with_custom_metadata()
            yield batch, _meta_dict(meta)

    def group_bytes(self, index: int) -> Any:
        """The bytes batch `index`'s group wrote to this file: from the end of the batch
        before it (or the start of the messages: the schema and dictionaries) to its end."""
        if self._spans is None:
            if self._data is None:
                self._data = pa.memory_map(str(self.path)).read_buffer()
                self.base = len(_FILE_MAGIC)
                self.messages = _scan(self._data.slice(self.base))[0]
            spans, start = [], self.base
            for kind, offset, meta, body in self.messages:
                if kind == "record batch":
                    end = self.base + offset + meta + body
                    spans.append((start, end))
                    start = end
            self._spans = spans
        start, end = self._spans[index]
        return self._data.slice(start, end - start)

    def cut(self, batches: int) -> None:
        """Keep only the first `batches` batches of an open segment: the rest belong to a
        group the writer did not finish in both files, and are torn."""
        if self._file is not None:  # its messages are not scanned: count its batches
            if self.batch_count > batches:
                raise JournalError(
                    f"{self.path}: sealed, yet it holds batches of a group that is not whole"
                )
            return
        at = [n for n, m in enumerate(self.messages) if m[0] == "record batch"]
        if len(at) <= batches:
            return
        keep = at[batches - 1] + 1 if batches else 0
        end = 0
        if keep:
            _, offset, meta, body = self.messages[keep - 1]
            end = offset + meta + body
        self.messages = self.messages[:keep]
        size = self._data.size
        self.torn_at = (self.base + end, size - self.base - end)
        self.clean_end = False
        self._stream = self._stream.slice(0, end)
        self._spans = None

    def last_meta(self) -> Meta | None:
        """Custom metadata of the last whole batch, if any."""
        if self._file is not None:
            count = self._file.num_record_batches
            return (
                _meta_dict(self._file.get_batch_with_custom_metadata(count - 1)[1])
                if count
                else None
            )
        last = None
        for _, meta in self.batches():
            last = meta
        return last


class _Group(msgspec.Struct, frozen=True):
    """One group commit: its batch of entries and its market-data batch (one may be None),
    with the index of each in its file (-1 for None)."""

    meta: Meta  # first_seq, last_seq, prev (both batches carry the same)
    entries: pa.RecordBatch | None
    market: pa.RecordBatch | None
    index: int
    market_index: int


def _span(meta: Meta, where: str) -> tuple[int, int]:
    try:
        return int(meta[_FIRST_SEQ]), int(meta[_LAST_SEQ])
    except (KeyError, ValueError):
        raise JournalError(f"{where}: a batch has no valid tape.first_seq/last_seq") from None


class _Pair:
    """One segment: its entries file and (if market data was journaled in it) its
    market-data file, read up to the last group whole in both.

    A group is one batch in either file or one in each, every batch carrying the group's
    first and last seq: it is whole when its batches hold last - first + 1 rows. A crash
    can leave an open file with a torn message, or one batch of a group whose other batch
    never came: both are cut (`torn`); a sealed file never needs a cut.
    """

    __slots__ = ("entries", "market", "torn")

    def __init__(self, path: Path, last_seq: int | None) -> None:
        self.entries = _open_segment(path, SCHEMA)
        market = _market_file(path)
        self.market = None if market is None else _open_segment(market, MARKET_SCHEMA)
        if self.market is not None and self.market.sealed and not self.entries.sealed:
            # sealed since the entries file was read (a live writer rotating): the writer
            # ended both streams before sealing either, so the entries file now holds the
            # other batch of every group in it; read it again
            self.entries = _open_segment(path, SCHEMA)
        self.torn: list[TornTail] = []
        if not self.sealed:
            self._settle(last_seq)

    @property
    def sealed(self) -> bool:
        return self.entries.sealed and (self.market is None or self.market.sealed)

    @property
    def files(self) -> list[_Segment]:
        return [self.entries] if self.market is None else [self.market, self.entries]

    def _settle(self, last_seq: int | None) -> None:
        """Cut the open files back to their whole groups that follow each other from
        `last_seq` (the run's last seq before this segment): a crash can keep a later
        group of one file and lose an earlier one of the other, and what follows a lost
        group is cut too, so that no seq is ever missing."""
        kept = used = 0
        for group in self.groups():
            first, last = _span(group.meta, str(self.entries.path))
            rows = sum(b.num_rows for b in (group.entries, group.market) if b is not None)
            if rows != last - first + 1 or first != (0 if last_seq is None else last_seq + 1):
                break
            kept += group.entries is not None
            used += group.market is not None
            last_seq = last
        self.entries.cut(kept)
        if self.market is not None:
            self.market.cut(used)
        for segment in self.files:
            if segment.torn_at is not None:
                self.torn.append(TornTail(segment.name, *segment.torn_at, last_seq))

    def groups(self) -> Iterator[_Group]:
        """Yield the groups in order: the batches of both files merged by first seq."""
        where = str(self.entries.path)

        def numbered(segment: _Segment | None) -> Iterator[tuple[int, int, pa.RecordBatch, Meta]]:
            if segment is not None:
                for index, (batch, meta) in enumerate(segment.batches()):
                    yield _span(meta, where)[0], index, batch, meta

        entries, market = numbered(self.entries), numbered(self.market)
        e, m = next(entries, None), next(market, None)
        while e is not None or m is not None:
            first = min(x[0] for x in (e, m) if x is not None)
            here = [x if x is not None and x[0] == first else None for x in (e, m)]
            meta = next(x[3] for x in here if x is not None)
            yield _Group(
                meta,
                None if here[0] is None else here[0][2],
                None if here[1] is None else here[1][2],
                -1 if here[0] is None else here[0][1],
                -1 if here[1] is None else here[1][1],
            )
            if here[0] is not None:
                e = next(entries, None)
            if here[1] is not None:
                m = next(market, None)

    def merged(self) -> Iterator[pa.RecordBatch]:
        """Yield each group as one SCHEMA batch in seq order."""
        for group in self.groups():
            yield merge(group.entries, group.market)

    def head(self) -> tuple[int, bytes] | None:
        """(last seq, chain hash) after the last group, None if there is none: only the
        last batch of each file is read (a sealed file's by its index)."""
        lasts = [(s, meta) for s in self.files if (meta := s.last_meta()) is not None]
        if not lasts:
            return None
        first = max(_span(meta, str(s.path))[0] for s, meta in lasts)
        last = [(s, meta) for s, meta in lasts if _span(meta, str(s.path))[0] == first]
        meta = last[0][1]
        try:
            prev = bytes.fromhex(meta[_PREV].decode())
            seq = int(meta[_LAST_SEQ])
        except (KeyError, ValueError):
            raise JournalError(
                f"{self.entries.path}: the last batch has no valid tape.* metadata; "
                "cannot continue its seq and hash chain"
            ) from None
        group = {id(s): s.group_bytes(s.batch_count - 1) for s, _ in last}
        market = b"" if self.market is None else group.get(id(self.market), b"")
        return seq, _group_hash(prev, market, group.get(id(self.entries), b""))


def _open_stream(data: Any) -> Any:
    return pa.ipc.open_stream(data, options=_READ_OPTIONS)


def _write_options(compression: Compression) -> Any:
    return pa.ipc.IpcWriteOptions(compression=compression, use_threads=False)


def _open_segment(path: Path, expected: pa.Schema) -> _Segment:
    """Open a segment file; an open one sealed meanwhile (a live writer rotating) is read
    sealed."""
    try:
        return _Segment(path, expected)
    except FileNotFoundError:
        if path.suffix != OPEN_SUFFIX:
            raise
        return _Segment(path.with_suffix(SEALED_SUFFIX), expected)


def _seal(stream_path: Path, segment: _Segment, compression: Compression) -> None:
    """Seal an open segment into the IPC file format and rename it `.arrow`.

    The file format is the stream's messages between the file magic and a footer locating
    them. The writer starts every open segment with the magic, so a segment that ends with
    its messages (and an EOS) is sealed in place: the footer appended, fsync, rename. Any
    other (a torn tail, an interrupted seal, a stream without the magic) is copied: the
    whole messages as they are under the magic, then the footer, into `.arrow.tmp`, fsync,
    rename, delete the stream. Batches are rewritten only if the stream has no batch or its
    dictionaries are not the one set written before the first batch."""
    run_dir = stream_path.parent
    final = stream_path.with_suffix(SEALED_SUFFIX)
    footer = _footer(segment)
    batches = sum(1 for m in segment.messages if m[0] == "record batch")
    tail = b"" if footer is None else footer + struct.pack("<i", len(footer)) + _FILE_MAGIC[:6]
    if footer is not None and segment.base and segment.clean_end:
        with open(stream_path, "r+b", buffering=0) as out:
            out.seek(segment.base + segment.messages_bytes)  # over the EOS: the same bytes
            _write_all(out, _EOS_MARKERS[0] + tail)
            os.fsync(out.fileno())
        _check_footer(stream_path, batches)
        os.replace(stream_path, final)
        _fsync_dir(run_dir)
        return
    tmp = run_dir / (final.name + ".tmp")
    if footer is None:
        _rewrite(segment, tmp, compression)
    else:
        with open(tmp, "wb", buffering=0) as out:
            _write_all(out, _FILE_MAGIC)
            _copy_prefix(segment.path, out, segment.base, segment.messages_bytes)
            _write_all(out, _EOS_MARKERS[0] + tail)
            os.fsync(out.fileno())
        _check_footer(tmp, batches)
    os.replace(tmp, final)
    stream_path.unlink()
    _fsync_dir(run_dir)


def _seal_files(paths: list[tuple[Path, pa.Schema]], compression: Compression) -> None:
    """Seal a segment's open files (market data first), each on disk before any is sealed."""
    _seal_pair([(path, _Segment(path, schema)) for path, schema in paths], compression)


def _seal_pair(files: list[tuple[Path, _Segment]], compression: Compression) -> None:
    """Seal the open files of one segment, the market-data file first. A sealed file is
    never cut, so the others are fsynced before it is sealed: else (fsync "none", a power
    loss) it could outlive the other batch of its last group (see `_Segment.cut`)."""
    for path, _ in files[1:]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for path, segment in files:
        _seal(path, segment, compression)


def _check_footer(path: Path, batches: int) -> None:
    indexed = pa.ipc.open_file(str(path)).num_record_batches  # read the footer back
    if indexed != batches:
        raise JournalError(f"{path}: the footer indexes {indexed} batches, not {batches}")


def _rewrite(segment: _Segment, path: Path, compression: Compression) -> None:
    """Write a segment's whole batches as an IPC file at `path` and fsync it."""
    raw = pa.OSFile(str(path), "wb")
    sink = pa.BufferedOutputStream(raw, _IO_BUFFER)
    try:
        options = _write_options(compression)
        with pa.ipc.new_file(sink, segment.expected, options=options) as writer:
            for batch, meta in segment.batches():
                writer.write_batch(batch, custom_metadata=meta)
        sink.flush()
        os.fsync(raw.fileno())
    finally:
        sink.close()


def _copy_prefix(path: Path, out: Any, start: int, size: int) -> None:
    """Append `size` bytes from byte `start` of the file at `path` to the raw file `out`,
    in the kernel where it can (`copy_file_range`)."""
    with open(path, "rb", buffering=0) as source:
        source.seek(start)
        if hasattr(os, "copy_file_range"):
            try:
                while size > 0:
                    got = os.copy_file_range(source.fileno(), out.fileno(), size)
                    if not got:
                        break
                    size -= got
            except OSError:
                pass  # not supported between these files: copy through memory
        buffer = memoryview(bytearray(min(size, _IO_BUFFER)))
        while size > 0:
            got = source.readinto(buffer[: min(size, _IO_BUFFER)])
            if not got:
                raise JournalError(f"{path}: ended {size} bytes early while sealing")
            _write_all(out, buffer[:got])
            size -= got


def _write_all(out: Any, data: Any) -> None:
    """Write all of `data` to the raw file `out` (a raw write may be partial)."""
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]


def _footer(segment: _Segment) -> bytes | None:
    """Build the IPC file footer of a stream segment's whole messages (their offsets in
    the file, after the 8-byte magic); None if the stream needs rewriting instead."""
    messages = segment.messages
    kinds = [m[0] for m in messages]
    batches = kinds.count("record batch")
    dictionaries = kinds.count("dictionary")
    if (
        not batches
        or not segment.schema.equals(segment.expected)
        or kinds[0] != "schema"
        or kinds[1 : 1 + dictionaries] != ["dictionary"] * dictionaries
        or kinds[1 + dictionaries :] != ["record batch"] * batches
    ):
        return None
    footer = _template_footer(segment.expected, batches)
    table = _u32(footer, 0)
    vtable = table - struct.unpack_from("<i", footer, table)[0]
    blocks = [
        [
            (offset + len(_FILE_MAGIC), meta, body)
            for kind, offset, meta, body in messages
            if kind == wanted
        ]
        for wanted in ("dictionary", "record batch")
    ]
    for field, found in ((2, blocks[0]), (3, blocks[1])):  # Footer.dictionaries, .recordBatches
        entry = vtable + 4 + 2 * field
        vtable_size = struct.unpack_from("<H", footer, vtable)[0]
        slot = struct.unpack_from("<H", footer, entry)[0] if entry - vtable < vtable_size else 0
        if not slot:
            return None
        at = table + slot
        vector = at + _u32(footer, at)
        if _u32(footer, vector) != len(found):
            return None  # the dictionaries are not the one set the file writer writes
        for n, block in enumerate(found):
            struct.pack_into("<qi4xq", footer, vector + 4 + 24 * n, *block)
    return bytes(footer)


class _Tail:
    """A write-only file object that keeps only about its last `keep` bytes."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.chunks.append(chunk)
        self.size += len(chunk)
        self.position += len(chunk)
        while self.size - len(self.chunks[0]) >= self.keep:
            self.size -= len(self.chunks.popleft())
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True


def _u32(data: bytearray, at: int) -> int:
    value: int = struct.unpack_from("<I", data, at)[0]
    return value


def _template_footer(schema: pa.Schema, batches: int) -> bytearray:
    """The footer pyarrow's file writer gives `batches` batches of `schema` (their Block
    entries to be overwritten): written with empty batches, keeping only the tail."""
    tail = _Tail(keep=64 * 1024 + 24 * (batches + len(schema)))
    empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    with pa.ipc.new_file(pa.PythonFile(tail, mode="w"), schema) as writer:
        for _ in range(batches):
            writer.write_batch(empty)
    data = b"".join(tail.chunks)
    (length,) = struct.unpack_from("<i", data, len(data) - 10)
    if not 0 < length <= len(data) - 10:
        raise JournalError(f"IPC file footer of {length} bytes: more than the {tail.keep} kept")
    return bytearray(data[len(data) - 10 - length : len(data) - 10])


def _hash_range(fd: int, start: int, end: int, digest: Any) -> None:
    """Feed bytes [start, end) of the file open as `fd` to `digest` (no GIL held for
    the reads or the hashing of large chunks)."""
    while start < end:
        chunk = os.pread(fd, min(end - start, 4 * _IO_BUFFER), start)
        if not chunk:
            raise JournalError(f"fd {fd}: ended at byte {start} while hashing to {end}")
        digest.update(chunk)
        start += len(chunk)


class _Stream:
    """One open segment file being written: `path`, the IPC file magic, then an IPC stream
    of `schema` whose writer is made with the first batch (so the schema and dictionaries
    are part of the first group's bytes). The bytes of each batch written are read back
    from the page cache and hashed: no Python runs while Arrow writes, so a thread can."""

    __slots__ = (
        "_ipc",
        "_options",
        "_read",
        "dir_synced",
        "dropped",
        "path",
        "raw",
        "schema",
        "sink",
        "unsynced",
    )

    def __init__(self, path: Path, schema: pa.Schema, compression: Compression) -> None:
        self.path = path
        self.schema = schema
        self._options = _write_options(compression)
        self.raw = pa.OSFile(str(path), "wb")
        self.sink = pa.BufferedOutputStream(self.raw, _IO_BUFFER)
        self.sink.write(_FILE_MAGIC)  # sealing then only appends the footer (see `_seal`)
        self._read = os.open(path, os.O_RDONLY)
        self._ipc: Any = None
        self.unsynced = False
        self.dir_synced = False
        self.dropped = 0  # the cached pages before this byte were dropped (write_behind)

    @property
    def position(self) -> int:
        return int(self.sink.tell())

    def write(self, batch: pa.RecordBatch, meta: Meta) -> None:
        """Write one batch (after the stream's schema and dictionaries, first time)."""
        if self._ipc is None:
            self._ipc = pa.ipc.new_stream(self.sink, self.schema, options=self._options)
        self._ipc.write_batch(batch, custom_metadata=meta)
        self.sink.flush()
        self.unsynced = True

    def hash(self, start: int, digest: Any) -> None:
        """Feed what was written from byte `start` on to `digest`."""
        _hash_range(self._read, start, self.position, digest)

    def fsync(self) -> None:
        os.fsync(self.raw.fileno())
        self.unsynced = False

    def write_behind(self, start: int) -> None:
        """Start the OS writing out the bytes from `start` on, without waiting: the fsync
        that seals the segment then has little left to write. Then drop the cached pages
        of the bytes before `start` (hashed, and written out since the group before), so
        the next groups reuse them: a writer that never reads back has no use for them,
        and fresh page-cache pages cost more than reused ones (bench/sim.py, compiled: W1
        ~6-9% faster, W0 and W2 ~20%). Pages still being written out are kept by the
        OS; both calls are advisory."""
        fd = self.raw.fileno()
        if _SYNC_FILE_RANGE is not None:
            _SYNC_FILE_RANGE(fd, start, self.position - start, 2)  # WRITE
        if _FADVISE is not None and self.dropped < start:
            _FADVISE(fd, self.dropped, start - self.dropped, os.POSIX_FADV_DONTNEED)
            self.dropped = start

    def end(self, fsync: bool) -> None:
        """End the stream (EOS), flush, fsync if asked and unsynced, close the file."""
        if self._ipc is not None:
            self._ipc.close()
        self.sink.flush()
        if fsync and self.unsynced:
            self.fsync()
        self.sink.close()
        os.close(self._read)

    def abandon(self) -> None:
        """Close the file without an EOS: the stream may end inside a batch (a torn tail)."""
        # the disk that failed the batch may fail this too: the tail is torn then
        with contextlib.suppress(OSError, pa.ArrowException):
            self.sink.close()
        os.close(self._read)


def _sync_file_range() -> Any:
    """libc's sync_file_range(fd, offset, nbytes, flags) (Linux), else None: advisory
    (its result is ignored), and ctypes lets go of the GIL while it runs."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_FADVISE = getattr(os, "posix_fadvise", None)  # not on macOS


class _GroupWrite:
    """One group's Arrow writes and the chain after them (prev, then the bytes each write
    added, market data first), run in line or by a thread (`thread`, `error`)."""

    __slots__ = ("chain", "error", "meta", "prev", "sync", "thread", "writes")

    def __init__(
        self, writes: list[tuple[_Stream, pa.RecordBatch]], meta: Meta, prev: bytes, sync: bool
    ) -> None:
        # (stream, batch, where the batch's bytes will start)
        self.writes = [(stream, batch, stream.position) for stream, batch in writes]
        self.meta = meta
        self.prev = prev
        self.sync = sync  # fsync once finished
        self.chain = b""
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def run(self) -> None:
        for stream, batch, _ in self.writes:
            stream.write(batch, self.meta)
        digest = hashlib.sha256(self.prev)
        for stream, _, start in self.writes:
            stream.hash(start, digest)
        self.chain = digest.digest()

    def run_in_thread(self) -> None:
        try:
            self.run()
            for stream, _, start in self.writes:
                stream.write_behind(start)
        except BaseException as exc:  # raised by the writer's next group, flush or close
            self.error = exc


# --- writer ---------------------------------------------------------------------------------


class JournalWriter:
    """Append entries to a run journal; seal segments by size and on close.

    `append` assigns seq; entries reach the open segment in batches of `batch_size`, or
    earlier on `flush()`. Constructing a writer on an existing run directory continues
    the run in a new segment, after a clean close or a crash (see `torn`).
    """

    __slots__ = (
        "_batch_end",
        "_builder",
        "_closed",
        "_dir_synced",
        "_encoders",
        "_failed",
        "_io",
        "_lock",
        "_pieces",
        "_prev",
        "_rows",
        "_run",
        "_run_values",
        "_seal_error",
        "_sealer",
        "_segment",
        "_seq",
        "_streams",
        "_written",
        "batch_size",
        "compression",
        "fsync",
        "manifest",
        "run_dir",
        "segment_bytes",
        "torn",
    )

    def __init__(
        self,
        root: str | Path,
        manifest: Manifest,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        fsync: FsyncPolicy = "batch",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        compression: Compression = DEFAULT_COMPRESSION,
    ) -> None:
        if not isinstance(manifest, Manifest):
            raise JournalError(f"manifest: expected a Manifest, got {type(manifest).__name__}")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync: expected one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        if type(segment_bytes) is not int or segment_bytes < 1:
            raise ValueError(f"segment_bytes: expected an int >= 1, got {segment_bytes!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression: expected lz4, zstd or None, got {compression!r}")
        _check_run_id(manifest.run_id)
        self.run_dir = Path(root) / manifest.run_id
        self.batch_size = batch_size
        self.fsync: FsyncPolicy = fsync
        self.segment_bytes = segment_bytes
        self.compression: Compression = compression
        self.torn: TornTail | None = None  # what a restart found and cut
        self._builder = BatchBuilder(min(batch_size, BUILDER_ROWS))
        self._encoders: dict[type[Message], Encoder] = self._builder.encoders
        self._seq = 0  # next seq to assign
        self._written = 0  # first seq not yet written; pending rows are _written.._seq-1
        # The next batch, in seq order: parts of built rows and runs of builder rows (ints).
        self._pieces: list[tuple[Rows, int, int] | int] = []
        self._rows = 0  # rows in the builder
        self._run = 0  # builder rows appended since the last piece
        self._batch_end = batch_size  # the seq that completes the pending batch
        self._prev = genesis_hash(manifest.run_id)
        self._run_values = run_values(manifest)
        self._segment = 0  # index of the open (or next) segment
        # The open segment's files: entries, and market data once some was written.
        self._streams: list[_Stream] = []
        self._dir_synced = False  # the market-data directory's entry
        self._sealer: threading.Thread | None = None  # sealing the previous segment
        self._seal_error: BaseException | None = None
        # Under fsync "none", the full group being written by a thread while appends go
        # on: one at a time, finished before the next group, a flush, head_hash or close
        # (which raise what it raised, failing the writer).
        self._io: _GroupWrite | None = None
        self._failed: str | None = None
        self._closed = False
        if (self.run_dir / MANIFEST).exists():
            self._lock = _lock(self.run_dir)
            try:
                self.manifest = self._reopen(manifest)
            except BaseException:
                _unlock(self.run_dir, self._lock)  # a writer that is not made holds no run
                raise
            return
        ours = (LOCK, MANIFEST + ".tmp")  # a crash while the first manifest was written
        if self.run_dir.exists() and any(p.name not in ours for p in self.run_dir.iterdir()):
            raise JournalError(
                f"{self.run_dir}: directory has files but no {MANIFEST}; "
                "refusing to write a journal into it"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.run_dir)
        try:
            (self.run_dir / ours[1]).unlink(missing_ok=True)
            self.manifest = msgspec.structs.replace(
                manifest, status="open", head_hash=None, entries=0
            )
            _write_manifest(self.run_dir, self.manifest)
            _fsync_dir(self.run_dir.parent)
        except BaseException:
            _unlock(self.run_dir, self._lock)
            raise

    def _reopen(self, manifest: Manifest) -> Manifest:
        """Continue an existing run: recover a torn tail, seal, continue seq and chain."""
        stored = read_manifest(self.run_dir)
        for name in _IDENTITY:
            if getattr(stored, name) != getattr(manifest, name):
                raise JournalError(
                    f"{self.run_dir / MANIFEST}: {name} is {getattr(stored, name)!r} but the "
                    f"writer was given {getattr(manifest, name)!r}; a run continues with the "
                    "manifest it started with"
                )
        for path in sorted(self.run_dir.glob("*.tmp")):
            path.unlink()  # a seal or manifest write the crash interrupted
        for path in sorted(self.run_dir.glob("*" + OPEN_SUFFIX)):
            if path.with_suffix(SEALED_SUFFIX).exists():
                path.unlink()  # sealed before the crash, not yet deleted
        market_dir = self.run_dir / MARKET_DIR
        for path in sorted(market_dir.glob("*.tmp")):
            path.unlink()
        for path in sorted(market_dir.glob("*" + OPEN_SUFFIX)):
            if path.with_suffix(SEALED_SUFFIX).exists():
                path.unlink()
        last_seq: int | None = None
        segments = _segments(self.run_dir)
        for path in segments:
            pair = _Pair(path, last_seq)
            head = pair.head()
            if head is not None:
                last_seq, self._prev = head
            for segment, torn in zip([f for f in pair.files if f.torn_at], pair.torn):
                self.torn = torn
                with open(segment.path, "rb") as f:
                    f.seek(torn.good_bytes)
                    segment.path.with_suffix(TORN_SUFFIX).write_bytes(f.read())
            opened = [(f.path, f) for f in pair.files if not f.sealed]
            _seal_pair(opened, self.compression)
        if segments:
            self._segment = int(segments[-1].stem) + 1
        self._seq = self._written = 0 if last_seq is None else last_seq + 1
        self._batch_end = self._seq + self.batch_size
        reopened = msgspec.structs.replace(stored, status="open", head_hash=None, entries=0)
        _write_manifest(self.run_dir, reopened)
        return reopened

    @property
    def next_seq(self) -> int:
        """The seq the next appended entry gets."""
        return self._seq

    @property
    def head_hash(self) -> str:
        """The chain after the last group written (the head), hex."""
        self._join_io()
        return self._prev.hex()

    def append(self, msg: Message, cause: int | None = None) -> int:
        """Journal one entry (an input, or an effect of input `cause`); return its seq."""
        encoder = self._encoders.get(type(msg))
        seq = self._seq
        if encoder is None or (
            cause is not None and (type(cause) is not int or not 0 <= cause < seq)
        ):
            raise self._refusal(msg, cause)
        row = self._rows
        try:
            encoder(msg, row, cause)
        except (KeyError, TypeError, ValueError) as exc:
            self._builder.clear_row(row)
            raise message_error(msg, exc) from None
        self._seq = seq + 1
        self._rows = row + 1
        self._run += 1
        if row + 1 == self._builder.capacity:
            self._materialize()
        if seq + 1 >= self._batch_end:
            self._write_batch(full=True, durable=False)
        return seq

    def append_columns(self, kinds: Any, columns: dict[str, Any]) -> int:
        """Journal a run of inputs given as columns (see `codec.columns_rows`) after
        whatever is pending; return the first seq. No per-row Python."""
        if self._failed is not None or self._closed:
            raise self._refusal(None, None)
        rows = columns_rows(kinds, columns)
        return self.append_rows(rows, 0, rows.length)

    def append_rows(self, rows: Rows, start: int, stop: int) -> int:
        """Journal rows [start, stop) of `rows` (made once by `codec.columns_rows`, then
        appended in slices) as inputs after whatever is pending; return the first seq.
        Constant work per call: the rows are gathered when their batch is written."""
        if self._failed is not None or self._closed:
            raise self._refusal(None, None)
        if not (type(rows) is Rows and 0 <= start < stop <= rows.length):
            raise JournalError(
                f"append_rows: expected codec.Rows and 0 <= start < stop <= its length, got "
                f"{type(rows).__name__} [{start}, {stop})"
            )
        first = self._seq
        if self._run:
            self._pieces.append(self._run)
            self._run = 0
        while start < stop:
            end = min(stop, start + self._batch_end - self._seq)
            self._pieces.append((rows, start, end))
            self._seq += end - start
            start = end
            if self._seq >= self._batch_end:
                self._write_batch(full=True, durable=False)
        return first

    def _materialize(self) -> None:
        """Build the builder's rows once and put (rows, start, stop) parts of them in
        place of the runs in `_pieces` (runs of rows sit between bulk parts)."""
        if self._run:
            self._pieces.append(self._run)
            self._run = 0
        if not self._rows:
            return
        run_rows: list[int] = []  # the builder row and the seq where each run starts
        run_seqs: list[int] = []
        row, seq = 0, self._written
        for piece in self._pieces:
            if isinstance(piece, int):
                run_rows.append(row)
                run_seqs.append(seq)
                row += piece
                seq += piece
            else:
                seq += piece[2] - piece[1]

        def seq_of(row: int) -> int:
            n = bisect.bisect_right(run_rows, row) - 1
            return run_seqs[n] + row - run_rows[n]

        try:
            built = self._builder.build_rows(self._rows, seq_of=seq_of)
        except BaseException as exc:
            self._fail(exc)
            raise
        self._rows = 0
        offset = 0
        for i, piece in enumerate(self._pieces):
            if isinstance(piece, int):
                self._pieces[i] = (built, offset, offset + piece)
                offset += piece

    def _refusal(self, msg: object, cause: object) -> Exception:
        if self._failed is not None:
            return JournalError(f"{self.run_dir}: the writer failed earlier: {self._failed}")
        if self._closed:
            return JournalError(f"{self.run_dir}: the writer is closed")
        if type(msg) not in self._encoders:
            return message_error(msg)
        return CodecError(
            f"{type(msg).__name__} cause: expected the seq of an earlier entry "
            f"(an int < {self._seq}) or None, got {cause!r}"
        )

    def flush(self, durable: bool = False) -> None:
        """Write pending entries as a batch; with `durable`, fsync them (write-ahead)."""
        if self._failed is not None or self._closed:
            raise self._refusal(None, None)
        self._join_io()
        if durable and self.fsync == "none" and self._sealer is not None:
            try:  # under "none" a rotated segment is fsynced by its seal only
                self._join_sealer()
            except BaseException as exc:
                self._fail(exc)
                raise
        if self._seq > self._written:
            self._write_batch(full=False, durable=durable)
        elif durable and any(stream.unsynced for stream in self._streams):
            self._fsync()

    @property
    def pending(self) -> int:
        """Entries appended but not yet written (the group being gathered)."""
        return self._seq - self._written

    def end_group(self) -> None:
        """End the group being gathered here, as a full one ends (same fsync policy, and
        under "none" written by a thread): for a bulk appender whose source ends, so that
        a group's market data is slices of one source, joined without a copy."""
        if self._failed is not None or self._closed:
            raise self._refusal(None, None)
        if self._seq > self._written:
            self._write_batch(full=True, durable=False)

    def close(self) -> None:
        """Write pending entries, seal the open segment and mark the manifest closed."""
        if self._closed:
            return
        if self._failed is None:
            with contextlib.suppress(BaseException):  # it failed the writer: refused below
                self._join_io()
        if self._failed is not None:
            self._abandon()
            raise self._refusal(None, None)
        try:
            if self._seq > self._written:
                self._write_batch(full=False, durable=False)
            self._seal_open_segment(background=False)
            self._join_sealer()
        except BaseException as exc:
            if self._failed is None:
                self._fail(exc)
            self._abandon()  # as documented: close releases the run, then raises
            raise
        self._closed = True
        self._encoders = {}
        self.manifest = msgspec.structs.replace(
            self.manifest, status="closed", head_hash=self._prev.hex(), entries=self._seq
        )
        _write_manifest(self.run_dir, self.manifest)
        _unlock(self.run_dir, self._lock)

    def _abandon(self) -> None:
        """Close a failed writer's files and release the run, as the death of its process
        would: what reached the disk stays, and a new writer recovers the run."""
        self._closed = True
        if self._io is not None and self._io.thread is not None:
            self._io.thread.join()
        self._io = None
        for stream in self._streams:
            stream.abandon()
        self._streams = []
        if self._sealer is not None:
            self._sealer.join()
            self._sealer = None
        _unlock(self.run_dir, self._lock)

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._failed is None:
            self.close()
        elif not self._closed:
            self._abandon()  # the failure's exception is the one that matters

    def _write_batch(self, *, full: bool, durable: bool) -> None:
        """Write everything pending (built parts and builder rows) as one group: its
        market data (if any) as a batch of the market-data file, then the others (if any)
        as a batch of the entries file, chained by the bytes written; fsync if the policy
        says so; rotate the segment when it is full.

        Under fsync "none" (nothing promised before close) the Arrow write of a full
        group of at least _THREAD_ROWS entries (compression and the write to the OS, which
        hold no GIL) runs in a thread while appends go on; the group before is finished
        first (its bytes hashed, the segment rotated), so groups are written one at a
        time, in order."""
        first = self._written
        rows = self._seq - first
        self._materialize()
        parts = cast(list[tuple[Rows, int, int]], self._pieces)  # no runs left
        self._pieces = []
        self._written = first + rows
        self._batch_end = self._written + self.batch_size
        try:  # assembled while the group before may still be written (it needs no chain)
            market, entries = assemble_split(first, parts, self._run_values)
        except BaseException as exc:
            self._fail(exc)
            raise
        self._join_io()
        try:
            if self._seal_error is not None:
                self._join_sealer()
            meta = {
                _FIRST_SEQ: str(first).encode(),
                _LAST_SEQ: str(first + rows - 1).encode(),
                _PREV: self._prev.hex().encode(),
            }
            if not self._streams:
                self._open_segment()
            writes = []
            if market is not None:
                if len(self._streams) == 1:
                    self._open_market()
                writes.append((self._streams[1], market))
            if entries is not None:
                writes.append((self._streams[0], entries))
            sync = durable or self.fsync == "always" or (full and self.fsync == "batch")
            group = _GroupWrite(writes, meta, self._prev, sync)
            if full and self.fsync == "none" and rows >= _THREAD_ROWS:
                group.thread = threading.Thread(target=group.run_in_thread, name="tape-journal-io")
                self._io = group
                group.thread.start()
                return
            group.run()
            self._finish(group)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _join_io(self) -> None:
        """Finish the group being written in a thread; fail the writer if it failed."""
        group, self._io = self._io, None
        if group is None or group.thread is None:
            return
        group.thread.join()
        try:
            if group.error is not None:
                raise group.error
            self._finish(group)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _finish(self, group: _GroupWrite) -> None:
        """Take a written group's chain, fsync if it asks, rotate the segment when full."""
        self._prev = group.chain
        if group.sync:
            self._fsync()
        if sum(stream.position for stream in self._streams) >= self.segment_bytes:
            self._seal_open_segment(background=True)

    def _fail(self, exc: BaseException) -> None:
        """Refuse everything from now on: seqs were assigned that cannot be written.

        What reached the disk stays readable; a new writer on the run recovers it."""
        self._failed = str(exc) if isinstance(exc, CodecError) else repr(exc)
        self._encoders = {}

    def _open_segment(self) -> None:
        path = self.run_dir / _segment_name(self._segment, OPEN_SUFFIX)
        self._streams = [_Stream(path, SCHEMA, self.compression)]

    def _open_market(self) -> None:
        market_dir = self.run_dir / MARKET_DIR
        if not market_dir.exists():
            market_dir.mkdir()
            self._dir_synced = False
        path = market_dir / _segment_name(self._segment, OPEN_SUFFIX)
        self._streams.append(_Stream(path, MARKET_SCHEMA, self.compression))

    def _fsync(self) -> None:
        """fsync the open segment's files, and once each, the directory entries they need."""
        for stream in self._streams:
            if stream.unsynced:
                stream.fsync()
            if not stream.dir_synced:
                _fsync_dir(stream.path.parent)
                stream.dir_synced = True
        if len(self._streams) > 1 and not self._dir_synced:
            _fsync_dir(self.run_dir)  # the market-data directory's entry
            self._dir_synced = True

    def _seal_open_segment(self, *, background: bool) -> None:
        """End the open segment's streams and seal its files: on rotation in a background
        thread (appends go on in the next segment meanwhile), on close before returning."""
        if not self._streams:
            return
        streams = self._streams[::-1]  # the market data first: its entries file vouches for it
        self._streams = []
        for stream in streams:
            stream.end(fsync=self.fsync != "none")  # "batch": a rotated segment is durable
        if self.fsync != "none" and len(streams) > 1 and not self._dir_synced:
            _fsync_dir(self.run_dir)
            self._dir_synced = True
        paths = [(stream.path, stream.schema) for stream in streams]
        self._segment += 1
        self._join_sealer()
        if background:
            self._sealer = threading.Thread(
                target=self._seal_in_background,
                args=(paths,),
                name=f"tape-seal-{paths[-1][0].name}",
            )
            self._sealer.start()
        else:
            _seal_files(paths, self.compression)

    def _seal_in_background(self, paths: list[tuple[Path, pa.Schema]]) -> None:
        try:
            _seal_files(paths, self.compression)
        except BaseException as exc:  # reported by the writer's next batch, rotation or close
            self._seal_error = exc

    def _join_sealer(self) -> None:
        """Wait for a background seal; raise if it failed."""
        if self._sealer is not None:
            self._sealer.join()
            self._sealer = None
        if self._seal_error is not None:
            raise JournalError(f"{self.run_dir}: sealing a segment failed: {self._seal_error!r}")


# --- reader ---------------------------------------------------------------------------------


class JournalReader:
    """Read a run journal: its manifest, batches and entries in seq order, and checks.

    A snapshot of the segments present at construction. A torn tail of an open segment
    file is reported in `torn`; reading stops at the last group whole in both files.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise JournalError(f"{run_dir}: not a directory (expected a run directory)")
        self.manifest = read_manifest(self.run_dir)
        self._pairs: list[_Pair] = []
        self.torn: list[TornTail] = []
        last_seq: int | None = None
        for path in _segments(self.run_dir):
            pair = _Pair(path, last_seq)
            self._pairs.append(pair)
            self.torn += pair.torn
            for segment in pair.files:  # the last group may be in either file
                meta = segment.last_meta()
                if meta and _LAST_SEQ in meta:
                    last_seq = max(-1 if last_seq is None else last_seq, int(meta[_LAST_SEQ]))

    @property
    def segment_paths(self) -> list[Path]:
        """Paths of the entries files read, in order (see `market_paths`)."""
        return [pair.entries.path for pair in self._pairs]

    @property
    def market_paths(self) -> list[Path]:
        """Paths of the market-data files read, in order (segments without market data
        have none)."""
        return [pair.market.path for pair in self._pairs if pair.market is not None]

    @property
    def sealed_paths(self) -> list[Path]:
        """Paths of the sealed entries files (IPC files: for pyarrow.dataset, Polars,
        DuckDB); every entry but the market data, which is in `sealed_market_paths`."""
        return [p.entries.path for p in self._pairs if p.entries.sealed]

    @property
    def sealed_market_paths(self) -> list[Path]:
        """Paths of the sealed market-data files (MARKET_SCHEMA)."""
        return [p.market.path for p in self._pairs if p.market is not None and p.market.sealed]

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield every entry in seq order as SCHEMA record batches, one per group that
        has entries (the market data merged in)."""
        for pair in self._pairs:
            yield from pair.merged()

    def entries(self) -> Iterator[Entry]:
        """Yield every entry in seq order (small batches are decoded together)."""
        return chain.from_iterable(map(decode, self._coalesced(DEFAULT_BATCH_SIZE)))

    def _coalesced(self, rows: int) -> Iterator[pa.RecordBatch]:
        """Yield the batches concatenated up to at least `rows` rows each (but the last)."""
        pending: list[pa.RecordBatch] = []
        have = 0
        for batch in self.batches():
            pending.append(batch)
            have += batch.num_rows
            if have >= rows:
                yield _combine(pending)
                pending, have = [], 0
        if pending:
            yield _combine(pending)

    def counts_by_kind(self) -> dict[str, int]:
        """Return the number of entries of each kind present, in KINDS order."""
        counts = [0] * len(KINDS)
        for pair in self._pairs:
            for group in pair.groups():
                for batch in (group.entries, group.market):
                    if batch is None or not batch.num_rows:
                        continue
                    kinds = batch.column("kind")
                    names = kinds.dictionary.to_pylist()
                    for row in pc.value_counts(kinds.indices).to_pylist():
                        counts[_kind_code(names[row["values"]])] += row["counts"]
        return {cls.__name__: n for cls, n in zip(KINDS, counts) if n}

    def tail(self, n: int) -> list[Entry]:
        """Return the last `n` entries, oldest first."""
        if n <= 0:
            return []
        chosen: list[pa.RecordBatch] = []
        have = 0
        for pair in reversed(self._pairs):
            for group in reversed(list(pair.groups())):  # merged only as far back as needed
                if have >= n:
                    break
                batch = merge(group.entries, group.market)
                chosen.append(batch)
                have += batch.num_rows
            if have >= n:
                break
        if not chosen:
            return []
        batch = _combine(chosen[::-1])
        return decode(batch.slice(max(0, batch.num_rows - n)))

    def verify(self) -> VerifyReport:
        """Recompute the hash chain; check seq order, causes, schema and manifest totals."""
        check = _Verifier(self.manifest)
        for pair in self._pairs:
            check.pair(pair)
        return check.report(self.manifest, self._pairs, self.torn)


def verify(run_dir: str | Path) -> VerifyReport:
    """Check the journal of a run directory (see `JournalReader.verify`)."""
    return JournalReader(run_dir).verify()


def _kind_code(name: str) -> int:
    cls = KIND_BY_NAME.get(name)
    if cls is None:
        raise JournalError(f"journal kind {name!r} is not in messages.KINDS")
    return KINDS.index(cls)


def _combine(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


class _Verifier:
    """Walk the groups of a run in order, collecting counts and problems."""

    def __init__(self, manifest: Manifest) -> None:
        self.prev = genesis_hash(manifest.run_id)
        self.run = run_values(manifest)
        self.next_seq = 0
        self.first_seq: int | None = None
        self.batches = self.entries = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.problems: list[str] = []
        self.chain_ok = True
        self.last = ""  # the group before, as problems name it

    def pair(self, pair: _Pair) -> None:
        for segment in pair.files:
            if not segment.schema.equals(segment.expected):
                what = "market-data" if segment.expected is MARKET_SCHEMA else "journal"
                self.problems.append(
                    f"segment {segment.name}: schema differs from the {what} schema"
                )
                self.chain_ok = False
                return
        name = pair.entries.path.stem
        try:
            for n, group in enumerate(pair.groups()):
                self.group(pair, f"segment {name} group {n}", group)
        except (pa.ArrowException, JournalError) as exc:
            self.problems.append(f"segment {name}: unreadable ({exc})")
            self.chain_ok = False

    def group(self, pair: _Pair, where: str, group: _Group) -> None:
        meta, entries, market = group.meta, group.entries, group.market
        batches = [b for b in (entries, market) if b is not None]
        rows = sum(b.num_rows for b in batches)
        self.batches += len(batches)
        self.entries += rows
        try:
            first, last = int(meta[_FIRST_SEQ]), int(meta[_LAST_SEQ])
            prev = bytes.fromhex(meta[_PREV].decode())
        except (KeyError, ValueError):
            self.problems.append(f"{where}: missing or malformed tape.* batch metadata")
            self.chain_ok = False
            self.next_seq += rows
            return
        where += f" (seq {first}..{last})"
        if first != self.next_seq:
            what = "entries missing" if first > self.next_seq else "overlap or reorder"
            self.problems.append(
                f"{where}: starts at seq {first}, expected {self.next_seq} ({what})"
            )
        seqs = [b.column(0).to_numpy() for b in batches]
        if (
            last - first + 1 != rows
            or not all(bool(np.all(np.diff(s.astype(np.int64)) > 0)) for s in seqs)
            or not np.array_equal(
                np.sort(np.concatenate(seqs)), np.arange(first, first + rows, dtype=np.uint64)
            )
        ):
            self.problems.append(
                f"{where}: its batches' seq columns are not {first}..{last} in order"
            )
        if prev != self.prev:
            before = f"the bytes of {self.last}" if self.last else "the run's genesis hash"
            self.problems.append(
                f"{where}: prev hash does not match {before} "
                "(a batch was edited, dropped, reordered or replaced)"
            )
            self.chain_ok = False
        self.last = where
        market_bytes = (
            b""
            if market is None or pair.market is None
            else pair.market.group_bytes(group.market_index)
        )
        entries_bytes = b"" if entries is None else pair.entries.group_bytes(group.index)
        self.prev = _group_hash(prev, market_bytes, entries_bytes)
        for batch, fixed_columns in ((entries, DICTIONARIES), (market, MARKET_DICTIONARIES)):
            if batch is None:
                continue
            for column, name, fixed in fixed_columns:
                if not batch.column(column).dictionary.equals(fixed):
                    self.problems.append(
                        f"{where}: dictionary of column {name!r} is not the fixed one"
                    )
        if market is not None:
            for j, values in self.run.dictionaries.items():
                name = SCHEMA.field(j).name
                if not market.column(name).dictionary.equals(values):
                    self.problems.append(
                        f"{where}: market-data dictionary of column {name!r} is not the "
                        f"run's ({self.run.describe()})"
                    )
        if entries is not None:  # market data has no cause
            cause = entries.column(1)
            if (
                cause.null_count < entries.num_rows
                and pc.any(pc.greater_equal(cause, entries.column(0))).as_py()
            ):
                self.problems.append(f"{where}: an entry's cause is not an earlier seq")
        if rows:  # each batch is in seq order: the group's ends are its batches' ends
            ends = [b for b in batches if b.num_rows]
            if self.first_ts is None:
                head = min(ends, key=lambda b: b.column(0)[0].as_py())
                self.first_ts = head.column("ts_recv")[0].as_py()
            tail = max(ends, key=lambda b: b.column(0)[-1].as_py())
            self.last_ts = tail.column("ts_recv")[-1].as_py()
            self.first_seq = first if self.first_seq is None else self.first_seq
        self.next_seq = last + 1

    def report(self, manifest: Manifest, pairs: list[_Pair], torn: list[TornTail]) -> VerifyReport:
        problems = self.problems
        if manifest.status == "closed":
            if torn:
                problems.append("manifest says closed but a segment has a torn tail")
            open_segments = [f.name for p in pairs for f in p.files if not f.sealed]
            if open_segments:
                problems.append(f"manifest says closed but {', '.join(open_segments)} is open")
            if manifest.entries != self.entries:
                problems.append(
                    f"manifest says {manifest.entries} entries at close, "
                    f"the segments hold {self.entries}"
                )
            if self.batches and manifest.head_hash != self.prev.hex():
                problems.append(
                    "manifest head_hash is not the hash of the journal's bytes "
                    "(the last batch was edited, dropped or replaced)"
                )
                self.chain_ok = False
        return VerifyReport(
            ok=not problems,
            chain_ok=self.chain_ok,
            segments=len(pairs),
            batches=self.batches,
            entries=self.entries,
            first_seq=self.first_seq,
            last_seq=self.next_seq - 1 if self.entries else None,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            torn=list(torn),
            problems=problems,
        )
