"""The run journal: Arrow IPC segments plus manifest.json, one writer, many readers.

Layout of a run directory `<root>/<run_id>/`:
- `manifest.json`: a `Manifest`, always replaced atomically (tmp, fsync, rename).
- `NNNNNN.arrows`: the open segment: the IPC file magic, then an Arrow IPC stream that
  only ever grows. At most one exists, and it is the last segment.
- `NNNNNN.arrow`: a sealed segment in the IPC file format (Polars, pyarrow.dataset and
  DuckDB read these lazily). The file format is the stream's whole messages between the
  file magic and a footer indexing them, so the writer seals its segment by appending
  the footer, fsyncing and renaming it: byte for byte what pyarrow's file writer makes
  of the same batches, without copying, decoding or recompressing them. A segment left
  by a crash (a torn tail, an interrupted seal) is sealed by copying its whole messages
  into `NNNNNN.arrow.tmp`, fsync, rename, then deleting the `.arrows`; if both exist,
  the `.arrow` wins. A segment that reaches `segment_bytes` is sealed by
  a background thread while appends go on in the next one (one seal at a time);
  `close` seals the last one and waits.
- `NNNNNN.torn`: bytes cut from a crashed writer's torn tail, kept for forensics.
- `writer.lock`: held (flock) by the one writer of an open run; gone after `close`.

Invariants:
- Inputs and effects share one `seq` order: 0, 1, 2, ... with no gap, across batches,
  segments and restarts. The writer assigns seq; `cause` is an earlier seq or None.
- Entries are written in record batches (group commit) of `batch_size` entries (a flush
  or close writes a shorter one). Each batch's custom metadata holds `tape.first_seq`,
  `tape.last_seq`, `tape.prev` and `tape.hash` (hex), where hash = sha256(prev, the row
  count, which columns are all null, the IPC serialisation of the others) and the first
  prev is sha256(run_id).
- Memory stays bounded by the batch: pending entries are builder rows and (rows, start,
  stop) slices of bulk `codec.Rows`; a batch is assembled column by column when written.
- A crash can only tear the end of the open segment. Readers stop at the last whole batch
  and report a `TornTail`; a restarted writer moves the cut bytes to `NNNNNN.torn`, seals
  the whole batches and continues seq and hash chain in segment NNNNNN+1.
- Record batch buffers may be compressed (`compression="lz4"` or `"zstd"`, default none);
  the hash is over the uncompressed `serialize()`, so the chain does not depend on it.
- fsync policy: "always" after every batch written; "batch" after each full batch, on
  rotation and on close; "none" only when sealing and closing. `flush(durable=True)`
  always fsyncs. The manifest is fsynced on every write.
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
import pyarrow as pa
import pyarrow.compute as pc

from engine.codec import (
    DICTIONARIES,
    SCHEMA,
    BatchBuilder,
    CodecError,
    Encoder,
    Entry,
    Rows,
    assemble,
    columns_rows,
    decode,
    message_error,
)
from engine.messages import KIND_BY_NAME, KINDS, Message

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_COMPRESSION",
    "DEFAULT_SEGMENT_BYTES",
    "FORMAT_VERSION",
    "LOCK",
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
    "verify",
]

FORMAT_VERSION = 1
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
_EOS_MARKERS = (b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00")
_EOS_BYTES = 8
_FILE_MAGIC = b"ARROW1\x00\x00"  # an IPC file starts with it (padded) and ends with its 6 bytes
_FIRST_SEQ = b"tape.first_seq"
_LAST_SEQ = b"tape.last_seq"
_PREV = b"tape.prev"
_HASH = b"tape.hash"
_IO_BUFFER = 1 << 20
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
    """The end of an open segment that is not a whole message (a crash mid-write)."""

    segment: str  # file name, e.g. "000003.arrows"
    good_bytes: int  # length of the readable prefix
    cut_bytes: int  # bytes after it
    last_good_seq: int | None  # last seq of the whole batches before the cut, in the run

    def __str__(self) -> str:
        return (
            f"{self.segment}: {self.cut_bytes} bytes after byte {self.good_bytes} are not a "
            f"whole batch; entries end at seq {self.last_good_seq}"
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


def _batch_hash(prev: bytes, batch: pa.RecordBatch) -> bytes:
    """Chain one batch: sha256(prev, row count, which columns are all null, the IPC
    serialisation of the other columns). All-null columns (most of a wide batch) are
    named, not hashed: the same tamper evidence without hashing megabytes of zeros."""
    digest = hashlib.sha256(prev)
    rows = batch.num_rows
    digest.update(rows.to_bytes(8, "little"))
    present = [i for i, column in enumerate(batch.columns) if column.null_count != rows]
    mask = bytearray(batch.num_columns)
    for i in present:
        mask[i] = 1
    digest.update(mask)
    if present:
        digest.update(batch.select(present).serialize())
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
    for path in sorted(run_dir.iterdir()):
        stem, suffix = path.stem, path.suffix
        if suffix not in (OPEN_SUFFIX, SEALED_SUFFIX) or len(stem) != 6 or not stem.isdigit():
            continue
        index = int(stem)
        if suffix == SEALED_SUFFIX or index not in found:
            found[index] = path
    return [found[i] for i in sorted(found)]


Meta = dict[bytes, bytes]


def _meta_dict(meta: Any) -> Meta:
    return {} if meta is None else dict(meta.to_dict())


class _Segment:
    """One segment opened for reading (memory-mapped): its schema and whole batches.

    Segment files are only ever created, appended to, renamed and deleted, never rewritten
    in place, so a mapping stays valid while a writer works on the run.
    """

    __slots__ = (
        "_file",
        "_stream",
        "base",
        "clean_end",
        "messages",
        "name",
        "path",
        "schema",
        "torn_at",
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self.torn_at: tuple[int, int] | None = None  # (good_bytes, cut_bytes) of a stream
        self.base = 0  # where an open segment's stream starts: 8 after the file magic
        self.clean_end = False  # an open segment ends with its last whole message (or EOS)
        # Whole messages of a stream: (type, offset, metadata bytes, body bytes) each.
        self.messages: list[tuple[str, int, int, int]] = []
        self._file: Any = None  # RecordBatchFileReader of a sealed segment
        self._stream: Any = None  # the whole messages of an open segment (a Buffer)
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
        if data.size >= len(_FILE_MAGIC) and data.slice(0, len(_FILE_MAGIC)) == _FILE_MAGIC:
            self.base = len(_FILE_MAGIC)
            data = data.slice(self.base)
        source = pa.BufferReader(data)
        good = 0
        try:
            messages = pa.ipc.MessageReader.open_stream(source)
            while True:
                message = messages.read_next_message()  # zero-copy: the body is not read
                body = message.body
                self.messages.append(
                    (
                        message.type,
                        good,
                        source.tell() - good - (body.size if body else 0),
                        body.size if body else 0,
                    )
                )
                good = source.tell()
        except StopIteration:
            pass  # end of stream: EOS marker or a clean end after a whole message
        except (pa.ArrowInvalid, OSError):
            pass  # a partial message: torn, unless it is an EOS (see below)
        rest = data.slice(good, min(_EOS_BYTES, data.size - good)).to_pybytes()
        ended = rest == _EOS_MARKERS[0] or (rest == _EOS_MARKERS[1] and data.size - good == 4)
        if rest and not ended:
            self.torn_at = (self.base + good, size - self.base - good)
        self.clean_end = not rest or (ended and data.size - good == len(rest))
        self._stream = data.slice(0, good)
        self.schema = _open_stream(self._stream).schema if good else SCHEMA

    @property
    def messages_bytes(self) -> int:
        """Length of the whole messages at the start of an open segment."""
        return int(self._stream.size)

    @property
    def sealed(self) -> bool:
        return self._file is not None

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
        while True:
            try:
                batch, meta = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                return
            yield batch, _meta_dict(meta)

    def newest_first(self) -> Iterator[pa.RecordBatch]:
        """Yield the batches from the last to the first."""
        if self._file is None:
            yield from reversed([batch for batch, _ in self.batches()])
            return
        for i in range(self._file.num_record_batches - 1, -1, -1):
            yield self._file.get_batch(i)

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


def _open_stream(data: Any) -> Any:
    return pa.ipc.open_stream(data, options=_READ_OPTIONS)


def _write_options(compression: Compression) -> Any:
    return pa.ipc.IpcWriteOptions(compression=compression, use_threads=False)


def _open_segment(path: Path) -> _Segment:
    """Open a segment; an open one sealed meanwhile (a live writer rotating) is read sealed."""
    try:
        return _Segment(path)
    except FileNotFoundError:
        if path.suffix != OPEN_SUFFIX:
            raise
        return _Segment(path.with_suffix(SEALED_SUFFIX))


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


def _check_footer(path: Path, batches: int) -> None:
    indexed = pa.ipc.open_file(str(path)).num_record_batches  # read the footer back
    if indexed != batches:
        raise JournalError(f"{path}: the footer indexes {indexed} batches, not {batches}")


def _rewrite(segment: _Segment, path: Path, compression: Compression) -> None:
    """Write a segment's whole batches as an IPC file at `path` and fsync it."""
    raw = pa.OSFile(str(path), "wb")
    sink = pa.BufferedOutputStream(raw, _IO_BUFFER)
    try:
        with pa.ipc.new_file(sink, SCHEMA, options=_write_options(compression)) as writer:
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
        or not segment.schema.equals(SCHEMA)
        or kinds[0] != "schema"
        or kinds[1 : 1 + dictionaries] != ["dictionary"] * dictionaries
        or kinds[1 + dictionaries :] != ["record batch"] * batches
    ):
        return None
    footer = _template_footer(batches)
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


def _template_footer(batches: int) -> bytearray:
    """The footer pyarrow's file writer gives `batches` batches of the journal schema (their
    Block entries to be overwritten): written with empty batches, keeping only the tail."""
    tail = _Tail(keep=64 * 1024 + 24 * (batches + len(DICTIONARIES)))
    empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in SCHEMA], schema=SCHEMA)
    with pa.ipc.new_file(pa.PythonFile(tail, mode="w"), SCHEMA) as writer:
        for _ in range(batches):
            writer.write_batch(empty)
    data = b"".join(tail.chunks)
    (length,) = struct.unpack_from("<i", data, len(data) - 10)
    if not 0 < length <= len(data) - 10:
        raise JournalError(f"IPC file footer of {length} bytes: more than the {tail.keep} kept")
    return bytearray(data[len(data) - 10 - length : len(data) - 10])


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
        "_ipc",
        "_lock",
        "_pieces",
        "_prev",
        "_raw",
        "_rows",
        "_run",
        "_seal_error",
        "_sealer",
        "_segment",
        "_seq",
        "_sink",
        "_unsynced",
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
        self._segment = 0  # index of the open (or next) segment
        self._raw: Any = None  # the open segment: its file, buffered sink and IPC writer
        self._sink: Any = None
        self._ipc: Any = None
        self._dir_synced = False
        self._unsynced = False  # batches written since the last fsync
        self._sealer: threading.Thread | None = None  # sealing the previous segment
        self._seal_error: BaseException | None = None
        self._failed: str | None = None
        self._closed = False
        if (self.run_dir / MANIFEST).exists():
            self._lock = _lock(self.run_dir)
            self.manifest = self._reopen(manifest)
            return
        ours = (LOCK, MANIFEST + ".tmp")  # a crash while the first manifest was written
        if self.run_dir.exists() and any(p.name not in ours for p in self.run_dir.iterdir()):
            raise JournalError(
                f"{self.run_dir}: directory has files but no {MANIFEST}; "
                "refusing to write a journal into it"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.run_dir)
        (self.run_dir / ours[1]).unlink(missing_ok=True)
        self.manifest = msgspec.structs.replace(manifest, status="open", head_hash=None, entries=0)
        _write_manifest(self.run_dir, self.manifest)
        _fsync_dir(self.run_dir.parent)

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
        last_seq: int | None = None
        segments = _segments(self.run_dir)
        for path in segments:
            segment = _Segment(path)
            meta = segment.last_meta()
            if meta is not None:
                try:
                    last_seq = int(meta[_LAST_SEQ])
                    self._prev = bytes.fromhex(meta[_HASH].decode())
                except (KeyError, ValueError):
                    raise JournalError(
                        f"{path}: the last batch has no valid tape.* metadata; "
                        "cannot continue its seq and hash chain"
                    ) from None
            if path.suffix == OPEN_SUFFIX:
                if segment.torn_at is not None:
                    good, cut = segment.torn_at
                    self.torn = TornTail(path.name, good, cut, last_seq)
                    with open(path, "rb") as f:
                        f.seek(good)
                        path.with_suffix(TORN_SUFFIX).write_bytes(f.read())
                _seal(path, segment, self.compression)
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
        """Hash of the last batch written (the chain head), hex."""
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
        if self._seq > self._written:
            self._write_batch(full=False, durable=durable)
        elif durable and self._unsynced:
            self._fsync()

    def close(self) -> None:
        """Write pending entries, seal the open segment and mark the manifest closed."""
        if self._closed:
            return
        if self._failed is not None:
            self._abandon()
            raise self._refusal(None, None)
        if self._seq > self._written:
            self._write_batch(full=False, durable=False)
        try:
            self._seal_open_segment(background=False)
            self._join_sealer()
        except BaseException as exc:
            self._fail(exc)
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
        try:
            if self._sink is not None:
                self._sink.close()  # no EOS: the stream may end inside a batch (a torn tail)
        except (OSError, pa.ArrowException):
            pass  # the disk that failed the batch may fail this too: the tail is torn then
        self._ipc = self._sink = self._raw = None
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
        """Write everything pending (built parts and builder rows) as one batch."""
        first = self._written
        rows = self._seq - first
        self._materialize()
        parts = cast(list[tuple[Rows, int, int]], self._pieces)  # no runs left
        self._pieces = []
        try:
            if self._seal_error is not None:
                self._join_sealer()
            batch = assemble(first, parts)
            digest = _batch_hash(self._prev, batch)
            meta = {
                _FIRST_SEQ: str(first).encode(),
                _LAST_SEQ: str(first + rows - 1).encode(),
                _PREV: self._prev.hex().encode(),
                _HASH: digest.hex().encode(),
            }
            if self._ipc is None:
                self._open_segment()
            self._ipc.write_batch(batch, custom_metadata=meta)
            self._sink.flush()
            self._unsynced = True
            self._written = first + rows
            self._batch_end = self._written + self.batch_size
            self._prev = digest
            if durable or self.fsync == "always" or (full and self.fsync == "batch"):
                self._fsync()
            if self._sink.tell() >= self.segment_bytes:
                self._seal_open_segment(background=True)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: BaseException) -> None:
        """Refuse everything from now on: seqs were assigned that cannot be written.

        What reached the disk stays readable; a new writer on the run recovers it."""
        self._failed = str(exc) if isinstance(exc, CodecError) else repr(exc)
        self._encoders = {}

    def _open_segment(self) -> None:
        path = self.run_dir / _segment_name(self._segment, OPEN_SUFFIX)
        self._raw = pa.OSFile(str(path), "wb")
        self._sink = pa.BufferedOutputStream(self._raw, _IO_BUFFER)
        self._sink.write(_FILE_MAGIC)  # sealing then only appends the footer (see `_seal`)
        self._ipc = pa.ipc.new_stream(self._sink, SCHEMA, options=_write_options(self.compression))
        self._dir_synced = False

    def _fsync(self) -> None:
        os.fsync(self._raw.fileno())
        self._unsynced = False
        if not self._dir_synced:  # the new segment's directory entry
            _fsync_dir(self.run_dir)
            self._dir_synced = True

    def _seal_open_segment(self, *, background: bool) -> None:
        """End the open segment's stream and seal it: on rotation in a background thread
        (appends go on in the next segment meanwhile), on close before returning."""
        if self._ipc is None:
            return
        self._ipc.close()
        self._sink.flush()
        if self.fsync != "none" and self._unsynced:
            os.fsync(self._raw.fileno())  # "batch": a rotated segment is durable
        self._sink.close()
        path = self.run_dir / _segment_name(self._segment, OPEN_SUFFIX)
        self._ipc = self._sink = self._raw = None
        self._unsynced = False
        self._segment += 1
        self._join_sealer()
        if background:
            self._sealer = threading.Thread(
                target=self._seal_in_background, args=(path,), name=f"tape-seal-{path.name}"
            )
            self._sealer.start()
        else:
            _seal(path, _Segment(path), self.compression)

    def _seal_in_background(self, path: Path) -> None:
        try:
            _seal(path, _Segment(path), self.compression)
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

    A snapshot of the segments present at construction. A torn tail of an open segment is
    reported in `torn`; reading stops at the last whole batch before it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise JournalError(f"{run_dir}: not a directory (expected a run directory)")
        self.manifest = read_manifest(self.run_dir)
        self._segments = [_open_segment(path) for path in _segments(self.run_dir)]
        self.torn: list[TornTail] = []
        last_seq: int | None = None
        for segment in self._segments:
            meta = segment.last_meta()
            if meta and _LAST_SEQ in meta:
                last_seq = int(meta[_LAST_SEQ])
            if segment.torn_at is not None:
                self.torn.append(TornTail(segment.name, *segment.torn_at, last_seq))

    @property
    def segment_paths(self) -> list[Path]:
        """Paths of the segments read, in order."""
        return [s.path for s in self._segments]

    @property
    def sealed_paths(self) -> list[Path]:
        """Paths of the sealed segments (IPC files: for pyarrow.dataset, Polars, DuckDB)."""
        return [s.path for s in self._segments if s.sealed]

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield every whole record batch in seq order."""
        for segment in self._segments:
            for batch, _ in segment.batches():
                yield batch

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
        for batch in self.batches():
            kinds = batch.column(2)
            names = kinds.dictionary.to_pylist()
            for row in pc.value_counts(kinds.indices).to_pylist():
                counts[_kind_code(names[row["values"]])] += row["counts"]
        return {cls.__name__: n for cls, n in zip(KINDS, counts) if n}

    def tail(self, n: int) -> list[Entry]:
        """Return the last `n` entries, oldest first."""
        chosen: list[pa.RecordBatch] = []
        have = 0
        for segment in reversed(self._segments):
            for batch in segment.newest_first():
                if have >= n:
                    break
                chosen.append(batch)
                have += batch.num_rows
        if not chosen or n <= 0:
            return []
        batch = _combine(chosen[::-1])
        return decode(batch.slice(max(0, batch.num_rows - n)))

    def verify(self) -> VerifyReport:
        """Recompute the hash chain; check seq order, causes, schema and manifest totals."""
        check = _Verifier(self.manifest.run_id)
        for segment in self._segments:
            check.segment(segment)
        return check.report(self.manifest, self._segments, self.torn)


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
    """Walk the batches of a run in order, collecting counts and problems."""

    def __init__(self, run_id: str) -> None:
        self.prev = genesis_hash(run_id)
        self.next_seq = 0
        self.first_seq: int | None = None
        self.batches = self.entries = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.problems: list[str] = []
        self.chain_ok = True

    def segment(self, segment: _Segment) -> None:
        if not segment.schema.equals(SCHEMA):
            self.problems.append(f"segment {segment.name}: schema differs from the journal schema")
            self.chain_ok = False
            return
        try:
            for index, (batch, meta) in enumerate(segment.batches()):
                self.batch(f"segment {segment.name} batch {index}", batch, meta)
        except pa.ArrowException as exc:
            self.problems.append(f"segment {segment.name}: unreadable ({exc})")
            self.chain_ok = False

    def batch(self, where: str, batch: pa.RecordBatch, meta: Meta) -> None:
        rows = batch.num_rows
        self.batches += 1
        self.entries += rows
        try:
            first, last = int(meta[_FIRST_SEQ]), int(meta[_LAST_SEQ])
            prev, recorded = (
                bytes.fromhex(meta[_PREV].decode()),
                bytes.fromhex(meta[_HASH].decode()),
            )
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
        if last - first + 1 != rows or not batch.column(0).equals(
            pa.array(range(first, first + rows), pa.uint64())
        ):
            self.problems.append(f"{where}: seq column is not {first}..{last} in order")
        if prev != self.prev:
            self.problems.append(
                f"{where}: prev hash does not match the previous batch "
                "(a batch was dropped, reordered or replaced)"
            )
            self.chain_ok = False
        if _batch_hash(prev, batch) != recorded:
            self.problems.append(f"{where}: hash mismatch (the batch was edited)")
            self.chain_ok = False
        for column, name, fixed in DICTIONARIES:
            if not batch.column(column).dictionary.equals(fixed):
                self.problems.append(f"{where}: dictionary of column {name!r} is not the fixed one")
        cause = batch.column(1)
        if cause.null_count < rows and pc.any(pc.greater_equal(cause, batch.column(0))).as_py():
            self.problems.append(f"{where}: an entry's cause is not an earlier seq")
        if rows:
            ts = batch.column(3)
            self.first_ts = ts[0].as_py() if self.first_ts is None else self.first_ts
            self.last_ts = ts[rows - 1].as_py()
            self.first_seq = first if self.first_seq is None else self.first_seq
        self.prev = recorded
        self.next_seq = last + 1

    def report(
        self, manifest: Manifest, segments: list[_Segment], torn: list[TornTail]
    ) -> VerifyReport:
        problems = self.problems
        if manifest.status == "closed":
            if torn:
                problems.append("manifest says closed but a segment has a torn tail")
            open_segments = [s.name for s in segments if not s.sealed]
            if open_segments:
                problems.append(f"manifest says closed but {', '.join(open_segments)} is open")
            if manifest.entries != self.entries:
                problems.append(
                    f"manifest says {manifest.entries} entries at close, "
                    f"the segments hold {self.entries}"
                )
            if self.batches and manifest.head_hash != self.prev.hex():
                problems.append("manifest head_hash is not the last batch's hash")
                self.chain_ok = False
        return VerifyReport(
            ok=not problems,
            chain_ok=self.chain_ok,
            segments=len(segments),
            batches=self.batches,
            entries=self.entries,
            first_seq=self.first_seq,
            last_seq=self.next_seq - 1 if self.entries else None,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            torn=list(torn),
            problems=problems,
        )
