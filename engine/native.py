"""Compiled engine and sim modules (mypyc), used only when built from exactly this source.

The modules in `MODULES` do the per-event work of every run: the engine's handlers, the
gauntlet and the books, the simulated venue and the sim's event loop. `make native` (or
`python -m tape.native`) compiles them with mypyc, from the same source, into C
extension modules. When they are built, importing `engine` or `sim` puts them ahead of
the source files; the other modules are always the source.

- A build lives in `.native/<key>/` at the repository root. `key` hashes the
  interpreter's ABI and every source file of `engine/` and `sim/`, so an edit to any of
  them makes a new key: a stale build is never loaded. The source runs until
  `make native` is run again.
- The environment variable `TAPE_NATIVE` decides: unset or `auto`, use the build when
  there is one; `0`, never use it; `require`, raise `NativeError` if there is none.
- Compiled code runs the same statements and gives the same journals, byte for byte
  (tests/engine/test_native.py compares them; `make test` runs the whole suite both
  ways). It also checks the annotated types of what it is given, at run time.
- mypyc drops the keywords of a class statement (`frozen=True`, ... : mypy issue 21938),
  so the msgspec Structs these modules use live in modules that are not compiled
  (`engine.config`, `sim.config`, `engine.messages`); `tape.native` refuses to compile
  a module that has one.

This module is never compiled itself, and reads no clock.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

MODULES = (
    "engine.core",
    "engine.risk",
    "engine.orders",
    "engine.positions",
    "sim.venue",
    "sim.run",
)
PACKAGES = ("engine", "sim")  # every source file of these is in the key
GROUP = "tape_native"  # mypyc's group name for the build
LIBRARY = f"{GROUP}__mypyc"  # the build's shared library, imported by the modules' shims
ROOT = Path(__file__).resolve().parent.parent
BUILDS = ROOT / ".native"
MARKER = "BUILT"  # written last: a build directory without it is not used
MODES = ("auto", "0", "require")


class NativeError(RuntimeError):
    """The compiled modules are required (TAPE_NATIVE=require) but cannot be used."""


def source_key(root: Path = ROOT) -> str:
    """Hash the interpreter's ABI and every source file of `PACKAGES` under `root`."""
    abi = sysconfig.get_config_var("SOABI") or sys.implementation.cache_tag or ""
    digest = hashlib.sha256(abi.encode())
    for path in sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")):
        data = path.read_bytes()
        digest.update(f"\0{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:20]


def mode() -> str:
    """The `TAPE_NATIVE` setting, checked."""
    value = os.environ.get("TAPE_NATIVE", "auto").strip() or "auto"
    if value not in MODES:
        raise NativeError(f"TAPE_NATIVE: expected one of {', '.join(MODES)}, got {value!r}")
    return value


def extension(directory: Path, name: str) -> Path | None:
    """The extension module file `name` in `directory`, if there is one for this Python."""
    for suffix in EXTENSION_SUFFIXES:
        path = directory / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


class Status:
    """Whether the compiled modules are in use, the build they come from, and why not."""

    __slots__ = ("active", "directory", "key", "reason")

    def __init__(self, active: bool, key: str, directory: Path, reason: str) -> None:
        self.active = active
        self.key = key
        self.directory = directory
        self.reason = reason

    def describe(self) -> str:
        if self.active:
            return f"compiled (mypyc build {self.key})"
        return f"pure Python ({self.reason})"


def missing(directory: Path) -> list[str]:
    """The extension modules of a build (`MODULES`, `LIBRARY`) not in `directory`."""
    names = [*(m.replace(".", "/") for m in MODULES), LIBRARY]
    return [name for name in names if extension(directory, name) is None]


def complete(directory: Path) -> bool:
    """Whether `directory` holds a whole build: its marker and every extension module."""
    return (directory / MARKER).is_file() and not missing(directory)


def _find() -> Status:
    key = source_key()
    directory = BUILDS / key
    setting = mode()
    if setting == "0":
        return Status(False, key, directory, "TAPE_NATIVE=0")
    lib = extension(directory, LIBRARY)
    if lib is None or not complete(directory):
        reason = f"no build for this source in {directory}: run `make native`"
        if setting == "require":
            raise NativeError(f"TAPE_NATIVE=require: {reason}")
        return Status(False, key, directory, reason)
    # The shared library, under the name the modules' shims import it by.
    spec = importlib.util.spec_from_file_location(LIBRARY, lib)
    if spec is None or spec.loader is None:
        raise NativeError(f"{lib}: not loadable as the extension module {LIBRARY}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[LIBRARY] = module
    spec.loader.exec_module(module)
    return Status(True, key, directory, "")


@functools.cache
def status() -> Status:
    """Find out once whether the compiled modules are used (loading their library)."""
    return _find()


def activate(package: str, path: list[str]) -> None:
    """Put the build's compiled modules of `package` ahead of its source files (called by
    the package's `__init__` with its `__path__`)."""
    found = status()
    if found.active:
        path.insert(0, str(found.directory / package))


def loaded() -> dict[str, bool]:
    """For each module of `MODULES` imported so far: whether it is the compiled one."""
    return {
        name: not str(getattr(sys.modules[name], "__file__", "")).endswith(".py")
        for name in MODULES
        if name in sys.modules
    }
