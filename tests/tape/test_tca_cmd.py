"""`tape tca`: tables, the HTML report, the model fit, comparisons and usage errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analytics.fill_model import load_fill_model
from tape.cli import main
from tape.demo import run_demo


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tca")
    run_demo(root, "a", 5, 300)
    run_demo(root, "b", 6, 300)
    return root


def tca(journals: Path, *args: str) -> int:
    return main(["tca", *args, "--journals", str(journals)])


def test_tca_when_run_id_then_tables_by_venue(
    journals: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tca(journals, "a") == 0
    out = capsys.readouterr().out
    assert re.search(r"tca: 1 run\(s\) \(a\): [\d,]+ orders, [\d,]+ fills", out)
    for needle in (
        "fills and costs by venue",
        "shortfall, markouts and time to fill by venue",
        "latency per stage by venue",
        "ALPHA",
        "GAMMA",
    ):
        assert needle in out, needle


def test_tca_when_folder_by_two_fields_and_html_then_report_written(
    journals: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.html"
    assert tca(journals, str(journals), "--by", "venue,instrument", "--html", str(report)) == 0
    out = capsys.readouterr().out
    assert "tca: 2 run(s) (a, b)" in out and "by venue, instrument" in out
    assert tca(journals, "[ab]") == 0  # a glob under --journals
    assert "tca: 2 run(s) (a, b)" in capsys.readouterr().out
    assert f"report written to {report}" in out
    page = report.read_text()
    assert page.count("<svg") == 6 and "BTC-USD" in page


def test_tca_when_fit_fill_model_then_file_and_printed_hash_match(
    journals: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.parquet"
    args = ["a", str(journals / "b"), "--fit-fill-model", str(path), "--horizon", "2s"]
    assert tca(journals, *args) == 0
    out = capsys.readouterr().out
    model, digest = load_fill_model(path)
    assert f"sha256 {digest}" in out and "horizon 2s" in out
    assert model.fitted_on == ("a", "b") and model.horizon_ns == 2_000_000_000


def test_tca_when_compare_then_side_by_side_with_differences(
    journals: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "c.html"
    assert tca(journals, "--compare", "a", "b", "--html", str(report)) == 0
    out = capsys.readouterr().out
    assert "A a vs B b" in out and "B - A" in out and "implementation shortfall" in out
    assert report.read_text().count("<svg") == 2
    assert tca(journals, "--compare", "a", "b", "--by", "venue") == 0
    out = capsys.readouterr().out
    assert "A a vs B b by venue" in out and "BETA" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "--by", "venue,colour"], "--by 'colour': expected fields among venue"),
        (["a", "--horizon", "soon"], "--horizon 'soon': expected a duration"),
        (["a", "--time-bucket", "0s"], "--time-bucket '0s': expected a duration > 0"),
        (["--compare", "a"], "--compare: expected exactly two RUNs"),
        (["nope"], "RUN: nope: no such run directory"),
        (["a", "--prior-strength", "-1"], "--prior-strength: expected >= 0"),
    ],
)
def test_tca_when_bad_usage_then_exit_2_names_the_argument(
    journals: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert tca(journals, *args) == 2
    assert message in capsys.readouterr().err


def test_cli_when_parser_built_then_matplotlib_not_imported() -> None:
    """matplotlib (~0.25 s to import) loads only when an HTML report draws, not with the
    parser every `tape` command builds."""
    import subprocess
    import sys

    code = (
        "import sys; from tape.cli import build_parser; build_parser(); "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
