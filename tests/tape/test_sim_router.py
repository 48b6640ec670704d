"""`tape sim` with a [router] and a fitted fill model: the hash in the manifest, exact replay."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from analytics.fill_model import fit_fill_model, write_fill_model
from analytics.tca import load_tca
from engine.fillmodel import model_sha256
from engine.journal import JournalReader
from engine.replay import FILL_MODEL_FILE, load_run_fill_model, replay
from tape.cli import build_parser

ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "tape" / "samples"
GOLDEN = ROOT / "tests" / "golden" / "golden-demo"


def test_sim_when_router_with_fill_model_then_manifest_names_it_and_replay_loads_it(
    tmp_path: Path,
) -> None:
    cells, info = fit_fill_model(load_tca(GOLDEN))
    write_fill_model(tmp_path / "model.parquet", cells, info)
    config = tmp_path / "sim.toml"
    config.write_text(
        (SAMPLES / "sim.toml").read_text()
        + '\n[router]\nmode = "model"\ntop_k = 2\nfill_model = "model.parquet"\n'
    )
    argv = [
        "sim",
        "--market", str(SAMPLES / "market.csv"),
        "--signals", str(SAMPLES / "signals.csv"),
        "--config", str(config),
        "--journals", str(tmp_path / "journals"),
        "--run-id", "routed",
    ]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert args.func(args, Console(file=io.StringIO(), width=200)) == 0
    run_dir = tmp_path / "journals" / "routed"
    manifest = JournalReader(run_dir).manifest
    assert manifest.fill_model_hash is not None
    assert manifest.config["fill_model_sha256"] == manifest.fill_model_hash
    assert (run_dir / FILL_MODEL_FILE).is_file()
    from engine.replay import engine_config

    model = load_run_fill_model(run_dir, engine_config(manifest))
    assert model is not None and model_sha256(model) == manifest.fill_model_hash
    result, _ = replay(run_dir)
    assert result.ok
    # A changed model file is refused rather than replayed with different decisions.
    (run_dir / FILL_MODEL_FILE).write_bytes(
        (run_dir / FILL_MODEL_FILE).read_bytes().replace(b'"n_orders":', b'"n_orders":1')
    )
    try:
        replay(run_dir)
    except ValueError as exc:
        assert "the model was changed after the run" in str(exc)
    else:
        raise AssertionError("a changed fill model was replayed")
