"""`tape journal export`: Hive-partitioned Parquet that DuckDB and Polars read back."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from engine.journal import JournalReader, JournalWriter, read_manifest
from tape.cli import main
from tape.demo import run_demo


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    run_demo(root, "ex", 5, 300)
    return root / "ex"


def export(run: Path, out: Path, *extra: str) -> int:
    return main(["journal", "export", str(run), "--out", str(out), *extra])


def test_export_when_run_then_duckdb_and_polars_read_it_back_by_partition(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lake"
    assert export(run, out) == 0
    reader = JournalReader(run)
    counts = reader.counts_by_kind()
    total = sum(counts.values())
    assert f"exported run ex: {total:,} entries" in capsys.readouterr().out
    assert (out / "run_id=ex" / "date=2026-01-01" / "kind=OrderFilled").is_dir()
    pattern = str(out / "**" / "*.parquet")
    got = duckdb.sql(
        f"select kind, count(*) as n, count(distinct run_id) as runs, min(date) as d "
        f"from read_parquet('{pattern}', hive_partitioning = true) group by kind"
    ).fetchall()
    assert {k: n for k, n, _, _ in got} == counts
    assert {(r, str(d)) for _, _, r, d in got} == {(1, "2026-01-01")}  # a date to DuckDB
    lf = pl.scan_parquet(pattern, hive_partitioning=True)
    fills = lf.filter(pl.col("kind") == "OrderFilled").select("seq", "qty", "price").collect()
    journal = pl.concat([pl.from_arrow(b) for b in reader.batches()], how="vertical").filter(
        pl.col("kind") == "OrderFilled"
    )
    assert sorted(fills["seq"].to_list()) == journal["seq"].to_list()
    assert fills["qty"].sum() == journal["qty"].sum()
    assert lf.select(pl.len()).collect().item() == total
    assert set(lf.collect_schema().names()) >= {"run_id", "date", "kind", "seq", "ts_recv"}


def test_export_when_already_exported_then_exit_2_unless_overwrite(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lake"
    assert export(run, out) == 0
    assert export(run, out) == 2
    assert "already exported" in capsys.readouterr().err
    assert export(run, out, "--overwrite") == 0
    ((n,),) = duckdb.sql(
        f"select count(*) from read_parquet('{out}/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert n == sum(JournalReader(run).counts_by_kind().values())


def test_export_when_run_crashed_then_unsealed_entries_exported(run: Path, tmp_path: Path) -> None:
    root = tmp_path / "j"
    manifest = read_manifest(run)
    entries = list(JournalReader(run).entries())[:500]
    writer = JournalWriter(root, manifest, fsync="none", batch_size=64)
    try:
        for _, cause, msg in entries:
            writer.append(msg, cause)
        writer.flush()  # never closed: the segment is an unsealed .arrows stream
        assert list((root / "ex").glob("*.arrows"))
        out = tmp_path / "lake"
        assert export(root / "ex", out) == 0
        n = pl.scan_parquet(str(out / "**" / "*.parquet"), hive_partitioning=True)
        assert n.select(pl.len()).collect().item() == 500
    finally:
        writer.close()


def test_export_when_run_missing_then_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(tmp_path / "nope", tmp_path / "lake") == 2
    assert "no journal at" in capsys.readouterr().err
