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

from pathlib import Path
from typing import Any

import msgspec

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
    handle = engine.handle
    inputs = effects = 0
    actual: list[Message] = []
    pos = 0
    input_seq = -1
    input_kind = ""
    divergence: Divergence | None = None
    for seq, cause, msg in reader.entries():
        if cause is None:
            if verify and pos < len(actual):  # an effect the journal lacks
                divergence = Divergence(
                    seq=input_seq,
                    input_seq=input_seq,
                    input_kind=input_kind,
                    expected=None,
                    actual=actual[pos],
                )
                break
            inputs += 1
            actual = handle(msg)
            pos = 0
            input_seq = seq
            input_kind = type(msg).__name__
            continue
        effects += 1
        if not verify:
            continue
        got = actual[pos] if pos < len(actual) else None
        if got != msg or cause != input_seq:
            divergence = Divergence(
                seq=seq, input_seq=input_seq, input_kind=input_kind, expected=msg, actual=got
            )
            break
        pos += 1
    else:
        if verify and pos < len(actual):
            divergence = Divergence(
                seq=input_seq,
                input_seq=input_seq,
                input_kind=input_kind,
                expected=None,
                actual=actual[pos],
            )
    result = ReplayResult(
        run_id=reader.manifest.run_id, inputs=inputs, effects=effects, divergence=divergence
    )
    return result, engine
