"""Build the compiled engine and sim modules: `make native`, or
`python -m tape.native [--optional] [--force]`.

mypyc compiles `engine.native.MODULES` from their source into `.native/<key>/` (see
`engine.native`: the key names exactly the source built, so a later edit is never run
from a stale build). It needs a C compiler and the Python headers. The build is written
to a scratch directory and renamed into place whole, with its `BUILT` marker; other
builds' directories are removed.

- `--optional`: if the build fails (no compiler, say), say why and exit 0: the source
  runs instead. `make demo` builds this way; `make test` requires the build.
- `--force`: build even if this source's build exists (else it says it is up to date).

The compiler's output goes to `.native/build.log`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from engine import native

# Run by a child Python from the repository root: mypyc's setuptools build, in parallel.
_SETUP = """
import sys
from mypyc.build import mypycify
from setuptools import Distribution

config, target, build_lib, build_temp, group, jobs, *paths = sys.argv[1:]
modules = mypycify(
    ["--config-file", config, *paths],
    opt_level="3",
    group_name=group,
    target_dir=target,
    multi_file=True,
)
# A bare Distribution: setup() would read the project's pyproject.toml (not ours to build).
dist = Distribution({"name": "tape-native", "ext_modules": modules})
dist.script_args = ["build_ext", "-b", build_lib, "-t", build_temp, "--parallel", jobs]
dist.parse_command_line()
dist.run_commands()
"""

# Type-checks the modules as mypyc compiles them. `make typecheck` holds `engine/` to the
# strict settings of pyproject.toml; here only what compiling needs.
_MYPY_CONFIG = """[mypy]
python_version = 3.11
ignore_missing_imports = True
"""


class BuildError(RuntimeError):
    """The compiled modules could not be built."""


def module_path(name: str, root: Path = native.ROOT) -> Path:
    return root / (name.replace(".", "/") + ".py")


def class_keyword_problems(source: str, where: str) -> list[str]:
    """The class statements of `source` with keywords (other than `metaclass`): mypyc
    would compile them without their keywords (mypy issue 21938)."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            keywords = [k.arg for k in node.keywords if k.arg != "metaclass"]
            if keywords:
                problems.append(
                    f"{where}:{node.lineno}: class {node.name} has class keywords "
                    f"({', '.join(str(k) for k in keywords)}), which a compiled module drops: "
                    "define it in a module that is not in engine.native.MODULES"
                )
    return problems


def build(key: str | None = None, log: Path | None = None) -> Path:
    """Compile `native.MODULES` for the current source (whose `native.source_key` is
    `key`), replacing any build of it; return the build's directory."""
    key = key or native.source_key()
    target = native.BUILDS / key
    problems = []
    for name in native.MODULES:
        path = module_path(name)
        problems += class_keyword_problems(path.read_text(), str(path.relative_to(native.ROOT)))
    if problems:
        raise BuildError("cannot compile:\n" + "\n".join(problems))
    native.BUILDS.mkdir(exist_ok=True)
    scratch = native.BUILDS / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    config = scratch / "mypy.ini"
    config.write_text(_MYPY_CONFIG)
    out = scratch / "out"
    paths = [str(module_path(name).relative_to(native.ROOT)) for name in native.MODULES]
    log = log or native.BUILDS / "build.log"
    jobs = str(max(1, min(4, len(os.sched_getaffinity(0)))))
    args = [str(config), str(scratch / "c"), str(out), str(scratch / "temp"), native.GROUP, jobs]
    with open(log, "w") as sink:
        done = subprocess.run(
            [sys.executable, "-c", _SETUP, *args, *paths],
            cwd=native.ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        tail = log.read_text(errors="replace").strip().splitlines()[-12:]
        raise BuildError(f"mypyc failed (exit {done.returncode}; {log}):\n" + "\n".join(tail))
    missing = native.missing(out)
    if missing:
        shutil.rmtree(scratch, ignore_errors=True)
        raise BuildError(f"mypyc built no extension module for {missing} (see {log})")
    (out / native.MARKER).write_text(
        json.dumps(
            {
                "key": key,
                "modules": list(native.MODULES),
                "mypy": importlib.metadata.version("mypy"),
                "python": sys.version.split()[0],
            }
        )
        + "\n"
    )
    shutil.rmtree(target, ignore_errors=True)
    out.rename(target)
    shutil.rmtree(scratch, ignore_errors=True)
    for other in native.BUILDS.iterdir():  # older sources' builds
        if other.is_dir() and other != target and not other.name.startswith(".tmp-"):
            shutil.rmtree(other, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tape.native", description=__doc__)
    parser.add_argument("--optional", action="store_true", help="exit 0 if it cannot build")
    parser.add_argument("--force", action="store_true", help="rebuild an existing build")
    args = parser.parse_args(argv)
    key = native.source_key()
    built = native.complete(native.BUILDS / key)
    if built and not args.force:
        print(f"native: up to date ({native.BUILDS / key})")
        return 0
    started = time.perf_counter()
    try:
        target = build(key)
    except (BuildError, OSError) as exc:
        print(f"native: {exc}", file=sys.stderr)
        if args.optional:  # a failed --force leaves the build it would have replaced
            runs = "the earlier build of this source" if built else "pure Python"
            print(f"native: not built; the engine runs as {runs}", file=sys.stderr)
            return 0
        return 1
    took = time.perf_counter() - started
    print(f"native: {len(native.MODULES)} modules compiled in {target} ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
