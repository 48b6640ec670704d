"""`tape journal verify | inspect | tail` on a real run, intact and tampered."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from engine.config import EngineConfig
from engine.core import Engine
from engine.journal import JournalWriter
from engine.messages import AssetClass, Instrument, OrderAccepted, QuoteTick, Side, Signal
from engine.runner import Runner, new_manifest
from tape.cli import main

INST = Instrument(
    instrument="X",
    asset_class=AssetClass.EQUITY,
    currency="USD",
    price_precision=2,
    size_precision=0,
    venue_symbols={"V": "X"},
)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    config = EngineConfig(run_id="j", instruments=(INST,))
    journal = JournalWriter(tmp_path, new_manifest(config, mode="test"), batch_size=4)
    runner = Runner(Engine(config), journal)
    for ts in range(1, 11):
        runner.process(
            QuoteTick(
                ts_recv=ts * 1_000_000_000,
                instrument="X",
                venue="V",
                bid_price=100 + ts,
                bid_size=5,
                ask_price=102 + ts,
                ask_size=5,
            )
        )
    runner.process(
        Signal(
            ts_recv=11_000_000_000,
            signal_id="s",
            strategy="p",
            account="A",
            instrument="X",
            side=Side.BUY,
            qty=3,
        )
    )
    runner.process(OrderAccepted(ts_recv=12_000_000_000, order_id="j-1", venue="V"))
    runner.close()
    return journal.run_dir


def test_journal_verify_when_intact_then_exit_0_summary(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["journal", "verify", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "journal OK: run j:" in out and "14 entries" in out and "hash chain intact" in out


def test_journal_verify_when_value_edited_then_exit_1_names_batch(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = next((run_dir / "market").glob("*.arrow"))  # the quotes
    with pa.ipc.open_file(path) as reader:
        batches = [
            reader.get_batch_with_custom_metadata(i) for i in range(reader.num_record_batches)
        ]
        schema = reader.schema
    first, meta = batches[0]
    bids = first.column("bid_price").to_pylist()
    bids[0] += 1  # a one-cent edit of one quote
    edited = first.set_column(
        first.schema.get_field_index("bid_price"), "bid_price", pa.array(bids, pa.int64())
    )
    with pa.ipc.new_file(path, schema) as writer:
        writer.write_batch(edited, custom_metadata=meta)
        for batch, m in batches[1:]:
            writer.write_batch(batch, custom_metadata=m)
    assert main(["journal", "verify", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert "journal DAMAGED" in out and "problem:" in out


def test_journal_inspect_when_run_then_manifest_counts_and_range(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["journal", "inspect", "j", "--journals", str(run_dir.parent)]) == 0
    out = capsys.readouterr().out
    assert '"run_id": "j"' in out and "QuoteTick" in out and "10" in out
    assert "ts_recv 1970-01-01 00:00:01.000000Z .. 1970-01-01 00:00:12.000000Z" in out


def test_journal_tail_when_n_then_last_entries_with_cause(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["journal", "tail", str(run_dir), "-n", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert '"kind":"ScheduleTimer"' in lines[1] and "out<10" in lines[1]
    assert lines[2].split()[0] == "13" and '"kind":"OrderAccepted"' in lines[2]
    assert main(["journal", "tail", str(run_dir), "-n", "0"]) == 2
