"""`tape replay RUN --what-if CONFIG`: the same market and signals under another config."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from engine.journal import JournalReader
from engine.replay import replay
from tape.cli import UsageError, build_parser
from tape.whatif import journal_market, journal_signals


def run_cli(*argv: str) -> str:
    args = build_parser().parse_args(list(argv))
    buffer = io.StringIO()
    assert args.func(args, Console(file=buffer, width=200)) == 0
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    journals = tmp_path_factory.mktemp("journals")
    run_cli("demo", "--journals", str(journals), "--run-id", "src", "--ticks", "300")
    return journals / "src"


def test_whatif_when_journal_then_market_and_signals_come_back(source: Path) -> None:
    market = journal_market(source)
    signals = journal_signals(source)
    counts = JournalReader(source).counts_by_kind()
    assert market.num_rows == counts.get("QuoteTick", 0) + counts.get("TradeTick", 0) + counts.get(
        "BookDelta", 0
    )
    assert len(signals) == counts["Signal"]
    assert market.column("ts").to_pylist() == sorted(market.column("ts").to_pylist())


def test_whatif_when_router_config_then_new_run_routes_and_replays(
    source: Path, tmp_path: Path
) -> None:
    config = tmp_path / "whatif.toml"
    config.write_text('seed = 11\n[router]\nmode = "static"\nvenue_preference = ["BETA"]\n')
    journals = source.parent
    text = run_cli("replay", str(source), "--what-if", str(config), "--journals", str(journals))
    assert "what-if run at" in text and "tape tca --compare" in text
    new = journals / "src-whatif"
    manifest = JournalReader(new).manifest
    assert manifest.mode == "what-if" and manifest.seed == 11
    assert manifest.config["router"]["venue_preference"] == ["BETA"]
    result, _ = replay(new)
    assert result.ok
    assert journal_signals(new) == journal_signals(source)


def test_whatif_when_unknown_key_then_usage_error(source: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[instruments]\nx = 1\n")
    args = build_parser().parse_args(
        ["replay", str(source), "--what-if", str(config), "--journals", str(source.parent)]
    )
    with pytest.raises(UsageError, match="instruments: unknown key: expected one of seed, router"):
        args.func(args, Console(file=io.StringIO()))
