"""`tape sim` end to end on the sample files: run, summary, journal that verifies."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tape.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "tape" / "samples"
MARKET = str(SAMPLES / "market.csv")
SIGNALS = str(SAMPLES / "signals.csv")


def sim(journals: Path, *extra: str, market: str = MARKET, signals: str = SIGNALS) -> int:
    return main(
        ["sim", "--market", market, "--signals", signals, "--journals", str(journals), *extra]
    )


def segments(run_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(run_dir.rglob("*.arrow"))]  # market/ too


def test_sim_when_sample_files_then_summary_and_journal_that_verifies_and_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sim(tmp_path) == 0
    out = capsys.readouterr().out
    assert "tape sim: run sim: 369 market rows from 1 file(s), 12 signals" in out
    for needle in ("orders and fills by instrument", "P&L per account", "rejects"):
        assert needle in out
    assert f"journal at {tmp_path / 'sim'}" in out
    assert main(["journal", "verify", "sim", "--journals", str(tmp_path)]) == 0
    assert main(["replay", "sim", "--verify", "--journals", str(tmp_path)]) == 0
    assert "replay OK" in capsys.readouterr().out
    assert sim(tmp_path) == 0
    assert (tmp_path / "sim-2" / "manifest.json").is_file()


def test_sim_when_sample_config_then_same_journal_as_demo_default(tmp_path: Path) -> None:
    assert sim(tmp_path / "a", "--run-id", "r") == 0
    assert sim(tmp_path / "b", "--run-id", "r", "--config", str(SAMPLES / "sim.toml")) == 0
    assert segments(tmp_path / "a" / "r") == segments(tmp_path / "b" / "r")
    assert sim(tmp_path / "c", "--run-id", "r", "--seed", "8") == 0
    manifest = (tmp_path / "c" / "r" / "manifest.json").read_text()
    assert '"seed": 8' in manifest or '"seed":8' in manifest


def test_sim_when_parquet_market_and_jsonl_signals_then_same_journal_as_csv(
    tmp_path: Path,
) -> None:
    raw = pacsv.read_csv(
        MARKET,
        convert_options=pacsv.ConvertOptions(
            column_types={"ts": pa.timestamp("ms", "UTC")},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )
    for name in ("bid_price", "bid_size", "ask_price", "ask_size", "price", "qty"):
        values = [None if v is None else Decimal(str(v)) for v in raw.column(name).to_pylist()]
        i = raw.schema.get_field_index(name)
        raw = raw.set_column(i, name, pa.array(values, pa.decimal128(18, 4)))
    pq.write_table(raw, tmp_path / "market.parquet", row_group_size=100)
    assert sim(tmp_path / "csv", "--run-id", "r") == 0
    jsonl = str(SAMPLES / "signals.jsonl")
    parquet = str(tmp_path / "market.parquet")
    assert sim(tmp_path / "pq", "--run-id", "r", market=parquet, signals=jsonl) == 0
    assert segments(tmp_path / "csv" / "r") == segments(tmp_path / "pq" / "r")


def test_sim_when_bad_inputs_then_exit_2_lists_all_problems_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (SAMPLES / "market.csv").read_text().splitlines()
    lines[17] = lines[17].replace(",quote,", ",qoute,")
    market = tmp_path / "market.csv"
    market.write_text("\n".join(lines) + "\n")
    rows = (SAMPLES / "signals.csv").read_text().splitlines()
    rows[2] = rows[2].replace(",0.5,", ",-0.5,")
    signals = tmp_path / "signals.csv"
    signals.write_text("\n".join(rows) + "\n")
    journals = tmp_path / "journals"
    assert sim(journals, market=str(market), signals=str(signals)) == 2
    err = capsys.readouterr().err.replace("\n", "")  # undo the console's line wrapping
    assert "bad input, nothing run:" in err
    assert "2 problems in the input:" in err
    assert f"{signals} row 2 (line 3): qty must be > 0, got -0.5" in err
    assert f"{market} row 17 (line 18): type must be one of quote, trade, book, got 'qoute'" in err
    assert not journals.exists()


def test_sim_when_run_id_taken_or_config_bad_then_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine").mkdir()
    assert sim(tmp_path, "--run-id", "mine") == 2
    assert "--run-id 'mine': a journal already exists" in capsys.readouterr().err.replace("\n", "")
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (SAMPLES / "sim.toml").read_text().replace("taker_fee_bps = 3", 'taker_fee_bps = "3"')
    )
    assert sim(tmp_path, "--config", str(bad)) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"--config: {bad}: venues[1].taker_fee_bps: expected int, got str" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "mine"]
