"""`tape journal export`: a run's journal as Hive-partitioned Parquet.

Invariants:
- The layout is `DIR/run_id=<run>/date=<YYYY-MM-DD>/kind=<Kind>/<run>-<n>.parquet`:
  `date` is the UTC date of each entry's `ts_recv`, `kind` its message type. Spark,
  Trino, DuckDB (`read_parquet(..., hive_partitioning = true)`) and Polars
  (`scan_parquet(..., hive_partitioning=True)`) read it back, the partition values as
  columns. The files hold every other journal column, typed as in the journal.
- Every whole batch of every segment is exported, the unsealed `.arrows` of a crashed
  run too (read with `JournalReader`, up to a torn tail, which is reported), one batch
  at a time: memory stays bounded by the batch size and the open partition files.
- Several runs may share DIR. A run already exported there is refused (exit 2) unless
  `--overwrite`, which first deletes that run's partition, and only it.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console

from engine.journal import JournalError, JournalReader

PARTITIONING = pa.schema([("run_id", pa.string()), ("date", pa.string()), ("kind", pa.string())])


class ExportResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an export wrote."""

    run_id: str
    out: str
    rows: int
    files: int
    torn: list[str]


def _batches(reader: JournalReader, schema: pa.Schema, run_id: str) -> Iterator[pa.RecordBatch]:
    """Yield the journal's batches with `kind` as text and the partition columns added."""
    kind_at = schema.get_field_index("kind")
    for batch in reader.batches():
        if not batch.num_rows:
            continue
        columns = list(batch.columns)
        columns[kind_at] = batch.column(kind_at).cast(pa.string())
        days = pc.cast(pc.cast(batch.column("ts_recv"), pa.timestamp("ns")), pa.date32())
        columns.append(pa.array([run_id] * batch.num_rows, pa.string()))
        columns.append(pc.cast(days, pa.string()))
        yield pa.RecordBatch.from_arrays(columns, schema=schema)


def export_journal(
    run_dir: str | Path, out: str | Path, *, overwrite: bool = False
) -> ExportResult:
    """Write a run's journal under `out` as Hive-partitioned Parquet."""
    reader = JournalReader(run_dir)
    run_id = reader.manifest.run_id
    target = Path(out)
    mine = target / f"run_id={run_id}"
    if mine.exists():
        if not overwrite:
            raise FileExistsError(
                f"--out {target}: run {run_id} is already exported at {mine} "
                "(use --overwrite to replace it)"
            )
        shutil.rmtree(mine)
    first = next(iter(reader.batches()), None)
    base = first.schema if first is not None else None
    rows = 0
    files: list[str] = []
    if base is not None:
        fields = list(base)
        kind_at = base.get_field_index("kind")
        fields[kind_at] = pa.field("kind", pa.string(), nullable=False)
        schema = pa.schema(
            [*fields, pa.field("run_id", pa.string()), pa.field("date", pa.string())]
        )
        import pyarrow.dataset as ds  # here: it imports pandas (~1 s) that other commands skip

        counted = _Counting(_batches(reader, schema, run_id))
        ds.write_dataset(
            pa.RecordBatchReader.from_batches(schema, counted),
            target,
            format="parquet",
            partitioning=ds.partitioning(PARTITIONING, flavor="hive"),
            basename_template=f"{run_id}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            min_rows_per_group=65_536,
            max_rows_per_group=1_048_576,
            file_visitor=lambda written: files.append(written.path),
        )
        rows = counted.rows
    return ExportResult(
        run_id=run_id,
        out=str(target),
        rows=rows,
        files=len(files),
        torn=[str(t) for t in reader.torn],
    )


class _Counting:
    """Pass batches through, counting their rows."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches = batches
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self._batches:
            self.rows += batch.num_rows
            yield batch


def cmd_journal_export(args: argparse.Namespace, out: Console) -> int:
    """Export a run's journal; return the exit code."""
    from tape.cli import UsageError, resolve_run

    run_dir = resolve_run(args.run, args.journals)
    try:
        result = export_journal(run_dir, args.out, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    except JournalError as exc:
        raise UsageError(f"RUN {args.run!r}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write ({exc})") from None
    for torn in result.torn:
        out.print(f"torn tail (exported up to the last whole batch): {torn}")
    out.print(
        f"exported run {result.run_id}: {result.rows:,} entries in {result.files} Parquet "
        f"file(s) under {result.out}/run_id={result.run_id}/ (hive partitions run_id, date, kind)"
    )
    return 0


def add_export_parser(jsub: Any, common: argparse.ArgumentParser) -> None:
    """Register `tape journal export`."""
    e = jsub.add_parser(
        "export",
        parents=[common],
        help="write a run's journal as Hive-partitioned Parquet (run_id/date/kind)",
    )
    e.add_argument("run", metavar="RUN")
    e.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset root")
    e.add_argument(
        "--overwrite", action="store_true", help="replace this run's partition if present"
    )
    e.set_defaults(func=cmd_journal_export)
