"""The sequencer loop shared by sim, live and test runs.

Invariants (DESIGN.md, "Every input, in this order"):
- An input is stamped (`ts_recv` from the runner's clock when it has one; the journal
  assigns `seq`), appended to the journal, and only then handed to `engine.handle`.
- Its effects are appended to the journal, each with `cause` = the input's seq, in the
  order the engine returned them.
- With `write_ahead` (live runs), the journal is flushed durably before any venue
  command is dispatched: nothing leaves the process that the journal could lose.
- Dispatch happens last, in effect order. The runner never reorders or drops anything.
- `ts_recv` never goes backwards: the live clock is monotonic by construction.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from engine.core import Engine, EngineConfig
from engine.journal import JournalWriter, Manifest
from engine.messages import VENUE_COMMANDS, Message

Dispatch = Callable[[Message], None]


class LiveClock:
    """Nanosecond wall clock that never goes backwards; the only clock a live run reads."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        """Return now in nanoseconds since the epoch, never less than the last reading."""
        now = time.time_ns()  # clock-ok: the live runner's injected clock
        if now <= self._last:
            now = self._last + 1
        self._last = now
        return now


def code_version() -> str:
    """Name the code that runs: package version, plus the git commit when there is one."""
    try:
        version = metadata.version("tape")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}"


def new_manifest(
    config: EngineConfig,
    *,
    mode: str,
    sim: dict[str, Any] | None = None,
    fill_model_hash: str | None = None,
) -> Manifest:
    """Describe a new run: everything a replay needs to rebuild its engine."""
    # Through JSON, so the manifest equals what a reader gets back (tuples become lists):
    # a restarted writer compares the two.
    raw = msgspec.json.decode(msgspec.json.encode(config))
    instruments = raw.pop("instruments")
    if sim is not None:
        raw["sim"] = msgspec.json.decode(msgspec.json.encode(sim))
    return Manifest(
        run_id=config.run_id,
        mode=mode,
        seed=config.seed,
        config=raw,
        instruments=instruments,
        fill_model_hash=fill_model_hash,
        code_version=code_version(),
    )


def _ignore(_: Message) -> None:
    """Dispatch nowhere (tests and sim runs that only journal)."""


class Runner:
    """Journal each input, handle it, journal its effects, flush, dispatch."""

    __slots__ = ("_append", "_clock", "_dispatch", "_handle", "_journal", "_write_ahead")

    def __init__(
        self,
        engine: Engine,
        journal: JournalWriter,
        dispatch: Dispatch | None = None,
        *,
        clock: Callable[[], int] | None = None,
        write_ahead: bool = False,
    ) -> None:
        self._handle = engine.handle
        self._journal = journal
        self._append = journal.append
        self._dispatch = dispatch or _ignore
        self._clock = clock
        self._write_ahead = write_ahead

    def process(self, msg: Message) -> list[Message]:
        """Sequence one input through journal and engine; return the effects dispatched."""
        if self._clock is not None:
            msg = msgspec.structs.replace(msg, ts_recv=self._clock())
        append = self._append
        seq = append(msg)
        effects = self._handle(msg)
        if not effects:
            return effects
        for effect in effects:
            append(effect, seq)
        if self._write_ahead and any(type(e) in VENUE_COMMANDS for e in effects):
            self._journal.flush(durable=True)
        dispatch = self._dispatch
        for effect in effects:
            dispatch(effect)
        return effects

    def close(self) -> None:
        """Flush and seal the journal (clean shutdown)."""
        self._journal.close()
