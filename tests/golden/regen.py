"""Regenerate the golden journal: `python tests/golden/regen.py`.

Run it only when a change of behaviour is intended, and say so in the commit: the
golden journal is how an unintended change shows up.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tape.demo import run_demo

HERE = Path(__file__).parent
RUN_ID = "golden-demo"
SEED = 11
TICKS = 200


def main() -> None:
    """Rewrite tests/golden/golden-demo from the seeded demo."""
    shutil.rmtree(HERE / RUN_ID, ignore_errors=True)
    result, _ = run_demo(HERE, RUN_ID, SEED, TICKS)
    print(f"wrote {result.run_dir}: {result.inputs} inputs, {result.effects} effects")


if __name__ == "__main__":
    main()
