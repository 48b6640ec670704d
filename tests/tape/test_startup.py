"""The `tape` command starts without importing pandas (~1 s here): pyarrow imports it on
its first `pa.array` call and with `pyarrow.dataset`, so neither may run at import."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from tape.cli import build_parser
build_parser().format_help()
print("pandas" in sys.modules)
"""


def test_cli_starts_without_pandas() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False", "importing the CLI imported pandas"
