"""`tape demo`: runs a sim on generated sample data and verifies its replay."""

from __future__ import annotations

from pathlib import Path

from tape.cli import main


def test_demo_when_run_twice_then_second_gets_new_run_id_and_both_verify(
    tmp_path: Path, capsys: object
) -> None:
    args = ["demo", "--ticks", "100", "--journals", str(tmp_path)]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.count("replay OK") == 2
    assert (tmp_path / "demo" / "manifest.json").is_file()
    assert (tmp_path / "demo-2" / "manifest.json").is_file()


def test_demo_when_run_id_taken_then_exit_2_names_option(tmp_path: Path, capsys: object) -> None:
    (tmp_path / "mine").mkdir()
    assert main(["demo", "--run-id", "mine", "--journals", str(tmp_path)]) == 2
    assert "--run-id 'mine'" in capsys.readouterr().err  # type: ignore[attr-defined]
