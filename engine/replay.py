"""Replay a journal through a fresh engine and compare every effect.

Invariants:
- The engine is rebuilt from the manifest alone (config, instruments, seed): nothing
  else may influence a replay.
- Inputs are fed in `seq` order; recorded effects are the entries whose `cause` is set,
  and each must equal, in order, what the fresh engine returns for its input.
- The first divergence stops the replay and names its seq: a missing, an extra or a
  different effect. A journal replays the same way whether it came from a sim or a
  live run.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import msgspec

from engine.codec import decode_messages
from engine.core import Engine, EngineConfig
from engine.journal import JournalReader, Manifest
from engine.messages import Message


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    """Where a replay first differed from its journal."""

    seq: int  # the journal seq of the expected effect, or of the input for an extra one
    input_seq: int
    input_kind: str
    expected: Message | None
    actual: Message | None

    def describe(self) -> str:
        """Say in one line what diverged."""
        exp = _show(self.expected) if self.expected is not None else "no effect"
        act = _show(self.actual) if self.actual is not None else "no effect"
        return (
            f"first divergence at seq {self.seq} (effect of input seq {self.input_seq}, "
            f"{self.input_kind}): expected {exp}; got {act}"
        )


class ReplayResult(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    inputs: int
    effects: int
    divergence: Divergence | None

    @property
    def ok(self) -> bool:
        """Say whether every effect matched."""
        return self.divergence is None


def _show(msg: Message) -> str:
    return f"{type(msg).__name__}{msgspec.json.encode(msg).decode()}"


def engine_config(manifest: Manifest) -> EngineConfig:
    """Rebuild the engine config a run was started with from its manifest."""
    raw: dict[str, Any] = {**manifest.config, "instruments": manifest.instruments}
    raw.pop("sim", None)  # the simulated venues' settings, not the engine's
    try:
        return msgspec.convert(raw, EngineConfig)
    except msgspec.ValidationError as exc:
        raise ValueError(f"manifest.json of run {manifest.run_id}: config invalid: {exc}") from exc


def replay(run_dir: Path, *, verify: bool = True) -> tuple[ReplayResult, Engine]:
    """Feed a journal's inputs to a fresh engine; with `verify`, compare every effect."""
    reader = JournalReader(run_dir)
    engine = Engine(engine_config(reader.manifest))
    gc_was_enabled = gc.isenabled()
    gc.disable()  # replay allocates many short-lived, acyclic messages: ~15% faster
    try:
        result = _feed(reader, engine, verify)
    finally:
        if gc_was_enabled:
            gc.enable()
    return result, engine


def _feed(reader: JournalReader, engine: Engine, verify: bool) -> ReplayResult:
    handle = engine.handle
    entries = effects = 0
    actual: list[Message] = []
    pos = n_actual = 0
    input_seq = -1
    input_msg: Message | None = None
    divergence: Divergence | None = None

    def diverged(seq: int, expected: Message | None, got: Message | None) -> Divergence:
        kind = type(input_msg).__name__ if input_msg is not None else "none"
        return Divergence(
            seq=seq, input_seq=input_seq, input_kind=kind, expected=expected, actual=got
        )

    for batch in reader.batches():
        first_seq = batch.column(0)[0].as_py()  # seqs are contiguous: the reader checks
        causes = batch.column(1).to_pylist()
        entries += len(causes)
        for row, (cause, msg) in enumerate(zip(causes, decode_messages(batch))):
            if cause is None:
                if pos != n_actual and verify:  # an effect the journal lacks
                    divergence = diverged(input_seq, None, actual[pos])
                    break
                actual = handle(msg)
                n_actual = len(actual)
                pos = 0
                input_seq = first_seq + row
                input_msg = msg
                continue
            effects += 1
            if not verify:
                continue
            got = actual[pos] if pos < n_actual else None
            if got != msg or cause != input_seq:
                divergence = diverged(first_seq + row, msg, got)
                break
            pos += 1
        if divergence is not None:
            break
    else:
        if verify and pos != n_actual:
            divergence = diverged(input_seq, None, actual[pos])
    return ReplayResult(
        run_id=reader.manifest.run_id,
        inputs=entries - effects,
        effects=effects,
        divergence=divergence,
    )
