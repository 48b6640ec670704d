"""The sequencer loop shared by sim, live and test runs.

Invariants (DESIGN.md, "Every input, in this order"):
- An input is stamped (`ts_recv` from the runner's clock when it has one; the journal
  assigns `seq`), appended to the journal, and only then handed to `engine.handle`.
- Its effects are appended to the journal, each with `cause` = the input's seq, in the
  order the engine returned them.
- With `write_ahead` (live runs), the journal is flushed durably before any venue
  command is dispatched: nothing leaves the process that the journal could lose.
- Dispatch happens last, in effect order. The runner never reorders or drops anything.
- `ts_recv` never goes backwards: the live clock is monotonic by construction, and a
  restarted runner stamps nothing earlier than the journal's last input.
- A runner on a journal that already holds entries (a run reopened after a crash or a
  stop) first rebuilds its engine, which must be fresh, from them: every journaled input
  is handled again and each effect must equal the journaled one (else `RecoveryError`:
  the run continues only with the code that wrote it). Nothing journaled is dispatched
  again, except the timers still pending (re-armed with their ids and times). An input
  whose effects are not all in the journal (a crash while they were appended) sent
  nothing, since dispatch comes last: its missing effects are journaled, then all its
  effects are dispatched, once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from engine.codec import Rows
from engine.config import EngineConfig
from engine.core import Engine
from engine.journal import JournalReader, JournalWriter, Manifest
from engine.messages import VENUE_COMMANDS, Message, ScheduleTimer, TimerFired

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


class RecoveryError(RuntimeError):
    """A journal the engine does not reproduce: the run cannot continue with this code."""


class _Recovered:
    """What rebuilding an engine from its journal leaves to do."""

    __slots__ = ("last_ts", "missing", "pending_timers", "unsent")

    def __init__(self) -> None:
        self.last_ts: int | None = None  # ts_recv of the last journaled input
        self.pending_timers: dict[str, ScheduleTimer] = {}  # scheduled, not fired yet
        self.missing: list[Message] = []  # effects of the last input the journal lacks
        self.unsent: list[Message] = []  # all the effects of that input (none dispatched)


def _rebuild(engine: Engine, run_dir: Path, entries: int) -> _Recovered:
    """Hand a fresh engine every journaled input, checking each effect against the
    journal; return the pending timers and the last input's missing effects."""
    done = _Recovered()
    actual: list[Message] = []
    pos = 0
    input_seq = -1
    seen = 0
    for entry in JournalReader(run_dir).entries():
        seen += 1
        msg = entry.msg
        if entry.cause is None:
            if pos != len(actual):
                raise RecoveryError(
                    f"{run_dir}: the engine gives input seq {input_seq} {len(actual)} "
                    f"effects, the journal {pos} before input seq {entry.seq}: this code "
                    "does not reproduce the run"
                )
            if type(msg) is TimerFired:
                done.pending_timers.pop(msg.timer_id, None)
            actual = engine.handle(msg)
            pos = 0
            input_seq = entry.seq
            done.last_ts = msg.ts_recv
            continue
        expected = actual[pos] if pos < len(actual) else None
        if msg != expected or entry.cause != input_seq:
            raise RecoveryError(
                f"{run_dir}: journal seq {entry.seq} (effect of input seq {entry.cause}) is "
                f"{type(msg).__name__}, the engine gives "
                f"{'no effect' if expected is None else type(expected).__name__} for input "
                f"seq {input_seq}: this code does not reproduce the run"
            )
        pos += 1
        if type(msg) is ScheduleTimer:
            done.pending_timers[msg.timer_id] = msg
    if seen != entries:
        raise RecoveryError(f"{run_dir}: read {seen} entries, the writer continues at {entries}")
    if pos != len(actual):  # the crash window: none of this input's effects went out
        done.missing = actual[pos:]
        done.unsent = actual
        for effect in actual[:pos]:
            if type(effect) is ScheduleTimer:
                done.pending_timers.pop(effect.timer_id, None)  # dispatched with the rest
    return done


class Runner:
    """Journal each input, handle it, journal its effects, flush, dispatch."""

    __slots__ = (
        "_append",
        "_clock",
        "_dispatch",
        "_handle",
        "_journal",
        "_last_ts",
        "_write_ahead",
    )

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
        self._last_ts = 0
        if journal.next_seq:
            self._resume(engine, journal)

    def _resume(self, engine: Engine, journal: JournalWriter) -> None:
        """Rebuild the engine from the journal, re-arm pending timers, finish the last
        input's effects if a crash cut them short."""
        done = _rebuild(engine, Path(journal.run_dir), journal.next_seq)
        if done.last_ts is not None:
            self._last_ts = done.last_ts
        if done.missing:
            cause = journal.next_seq - 1 - (len(done.unsent) - len(done.missing))
            for effect in done.missing:
                self._append(effect, cause)
            if self._write_ahead and any(type(e) in VENUE_COMMANDS for e in done.unsent):
                journal.flush(durable=True)
        for timer in done.pending_timers.values():
            self._dispatch(timer)
        for effect in done.unsent:
            self._dispatch(effect)

    def process(self, msg: Message) -> list[Message]:
        """Sequence one input through journal and engine; return the effects dispatched."""
        if self._clock is not None:
            ts = self._clock()
            if ts <= self._last_ts:  # a wall clock stepped back while the run was down
                ts = self._last_ts + 1
            self._last_ts = ts
            msg = msgspec.structs.replace(msg, ts_recv=ts)
        return self._handled(msg, self._append(msg))

    def process_row(self, msg: Message, rows: Rows, row: int) -> list[Message]:
        """`process` for an input that is row `row` of bulk `rows` (`codec.columns_rows`)
        and equal to `msg`: it is journaled as a slice of them, as the rows around it are.
        Not with a clock (the row's ts is the input's)."""
        if self._clock is not None:
            raise RuntimeError("process_row: the runner stamps inputs with its clock")
        return self._handled(msg, self._journal.append_rows(rows, row, row + 1))

    def _handled(self, msg: Message, seq: int) -> list[Message]:
        """Handle the input journaled at `seq`: journal, flush and dispatch its effects."""
        append = self._append
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
