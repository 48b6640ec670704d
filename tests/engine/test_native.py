"""The compiled modules (engine.native, tape.native): used only when built from this very
source, refused at build time when they would compile differently, and giving the same
journal bytes as the source."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from engine import native
from tape.native import BuildError, build, class_keyword_problems, module_path

ROOT = native.ROOT


def copy_sources(dest: Path) -> None:
    for pkg in native.PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            target = dest / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def test_source_key_when_any_source_file_changes_then_the_key_changes(tmp_path: Path) -> None:
    copy_sources(tmp_path)
    key = native.source_key(tmp_path)
    assert key == native.source_key(ROOT)  # the key names content, not where it lies
    risk = tmp_path / "engine" / "risk.py"  # a compiled module
    risk.write_text(risk.read_text() + "\n")
    assert native.source_key(tmp_path) != key
    risk.write_text(risk.read_text()[:-1])
    assert native.source_key(tmp_path) == key
    messages = tmp_path / "engine" / "messages.py"  # not compiled: its types are read
    messages.write_text(messages.read_text().replace("frozen=True", "frozen=False", 1))
    assert native.source_key(tmp_path) != key
    messages.unlink()
    (tmp_path / "sim" / "messages.py").write_text(
        (ROOT / "engine" / "messages.py").read_text()
    )  # the same bytes under another name
    assert native.source_key(tmp_path) != key


def test_mode_when_setting_unknown_then_error_names_variable_and_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAPE_NATIVE", "yes")
    with pytest.raises(native.NativeError, match=r"TAPE_NATIVE: expected one of auto, 0, require"):
        native.mode()
    monkeypatch.setenv("TAPE_NATIVE", "")
    assert native.mode() == "auto"


def test_find_when_no_build_or_an_unfinished_one_then_source_runs_or_require_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(native, "BUILDS", tmp_path)
    monkeypatch.setenv("TAPE_NATIVE", "auto")
    found = native._find()
    assert not found.active
    assert "make native" in found.reason and str(tmp_path) in found.reason
    assert found.describe().startswith("pure Python (no build for this source")
    # every module's extension but no BUILT marker: a build cut short is not used
    unfinished = tmp_path / found.key
    for name in (*native.MODULES, native.LIBRARY):
        path = unfinished / (name.replace(".", "/") + EXTENSION_SUFFIXES[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert native.missing(unfinished) == [] and not native.complete(unfinished)
    assert not native._find().active
    monkeypatch.setenv("TAPE_NATIVE", "require")
    with pytest.raises(native.NativeError, match=r"TAPE_NATIVE=require: no build .*`make native`"):
        native._find()
    monkeypatch.setenv("TAPE_NATIVE", "0")
    assert native._find().reason == "TAPE_NATIVE=0"


def test_loaded_modules_when_imported_then_compiled_exactly_when_the_build_is_used() -> None:
    for name in native.MODULES:
        importlib.import_module(name)
    loaded = native.loaded()
    assert sorted(loaded) == sorted(native.MODULES)
    active = native.status().active
    assert all(compiled == active for compiled in loaded.values()), loaded
    if native.mode() == "require":  # make test's first pass
        assert active
    elif native.mode() == "0":  # its second
        assert not active


def test_class_keyword_problems_when_struct_has_keywords_then_named_with_line() -> None:
    source = (
        "import msgspec\n\n"
        "class A(msgspec.Struct, frozen=True, kw_only=True):\n    x: int\n\n"
        "class B(metaclass=type):\n    pass\n"
    )
    (problem,) = class_keyword_problems(source, "m.py")
    assert problem.startswith("m.py:3: class A has class keywords (frozen, kw_only)")
    assert "engine.native.MODULES" in problem


def test_build_when_a_compiled_module_has_class_keywords_then_refused_before_compiling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(native, "BUILDS", tmp_path)
    monkeypatch.setattr(native, "MODULES", (*native.MODULES, "engine.config"))
    with pytest.raises(BuildError, match=r"engine/config\.py:\d+: class \w+ has class keywords"):
        build()
    assert list(tmp_path.iterdir()) == []  # nothing compiled, nothing written


def test_compiled_modules_when_read_then_no_class_keywords() -> None:
    for name in native.MODULES:
        path = module_path(name)
        assert class_keyword_problems(path.read_text(), name) == []


_DEMO = """
import sys
from pathlib import Path
from engine import native
from engine.journal import read_manifest
from tape.demo import run_demo
result, _ = run_demo(Path(sys.argv[1]), "native", 11, 120)
print(native.status().describe())
print(read_manifest(result.run_dir).head_hash)
"""


def _demo(root: Path, setting: str) -> tuple[str, str, dict[str, bytes]]:
    done = subprocess.run(
        [sys.executable, "-c", _DEMO, str(root)],
        cwd=ROOT,
        env={**os.environ, "TAPE_NATIVE": setting},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    mode, head = done.stdout.strip().splitlines()[-2:]
    run_dir = root / "native"
    files = {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*.arrow")}
    return mode, head, files


def test_demo_when_compiled_then_journal_bytes_equal_the_source_runs(tmp_path: Path) -> None:
    """Needs `make native` (make test runs it first): the child raises otherwise."""
    compiled = _demo(tmp_path / "compiled", "require")
    source = _demo(tmp_path / "source", "0")
    assert compiled[0].startswith("compiled (mypyc build ")
    assert source[0] == "pure Python (TAPE_NATIVE=0)"
    assert compiled[1] == source[1]  # the hash chain's head: every entry's bytes
    assert "market/000000.arrow" in compiled[2]
    assert compiled[2] == source[2]
