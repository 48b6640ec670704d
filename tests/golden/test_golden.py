"""The golden journal: a change that alters behaviour shows up here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from engine.replay import replay

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("golden_regen", HERE / "regen.py")
assert _spec is not None and _spec.loader is not None
regen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regen)
GOLDEN = HERE / regen.RUN_ID


def test_golden_when_replayed_then_every_effect_identical() -> None:
    result, _ = replay(GOLDEN, verify=True)
    assert result.divergence is None, (
        f"{result.divergence.describe()}\n"
        "Behaviour changed. If intended, run `python tests/golden/regen.py` and commit."
    )
    assert result.inputs > 1000 and result.effects > 50


def test_golden_when_regenerated_then_segments_byte_identical(tmp_path: Path) -> None:
    from tape.demo import run_demo

    result, _ = run_demo(tmp_path, regen.RUN_ID, regen.SEED, regen.TICKS)
    fresh = Path(result.run_dir)
    names = sorted(str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*.arrow"))
    assert "market/000000.arrow" in names
    assert names == sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*.arrow"))
    for name in names:
        assert (fresh / name).read_bytes() == (GOLDEN / name).read_bytes(), (
            f"{name} differs from the golden journal: sim or journal output changed. "
            "If intended, run `python tests/golden/regen.py` and commit."
        )
