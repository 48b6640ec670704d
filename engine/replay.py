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
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from engine.codec import KIND_DICTIONARY, decode_messages
from engine.config import EngineConfig
from engine.core import Engine
from engine.fillmodel import FillModel, decode_model, model_sha256
from engine.journal import JournalReader, Manifest
from engine.messages import KIND_CODE, Message, QuoteTick, TradeTick

_QUOTE, _TRADE = KIND_CODE[QuoteTick], KIND_CODE[TradeTick]


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


FILL_MODEL_FILE = "fill_model.json"


def load_run_fill_model(run_dir: Path, config: EngineConfig) -> FillModel | None:
    """Load the fill model a run was routed with, checking it is the one its config names."""
    if config.fill_model_sha256 is None:
        return None
    path = run_dir / FILL_MODEL_FILE
    try:
        model = decode_model(path.read_bytes(), where=str(path))
    except FileNotFoundError:
        raise ValueError(
            f"run {config.run_id}: its config names fill model {config.fill_model_sha256}, "
            f"but {path} is missing"
        ) from None
    got = model_sha256(model)
    if got != config.fill_model_sha256:
        raise ValueError(
            f"{path}: sha256 {got}, expected {config.fill_model_sha256} (the run's config): "
            "the model was changed after the run"
        )
    return model


def replay(
    run_dir: Path, *, verify: bool = True, every_tick: bool = False
) -> tuple[ReplayResult, Engine]:
    """Feed a journal's inputs to a fresh engine; with `verify`, compare every effect.

    By default a quote or trade that a later one of the same (instrument, venue)
    supersedes before any other input is counted but not handed to the engine: by the
    engine's market-data contract (engine/core.py) it can change nothing. `every_tick`
    hands every input over, for a replay that trusts no contract.
    """
    reader = JournalReader(run_dir)
    config = engine_config(reader.manifest)
    engine = Engine(config, fill_model=load_run_fill_model(run_dir, config))
    gc_was_enabled = gc.isenabled()
    gc.disable()  # replay allocates many short-lived, acyclic messages: ~15% faster
    try:
        result = _feed(reader, engine, verify, every_tick)
    finally:
        if gc_was_enabled:
            gc.enable()
    return result, engine


def _superseded(batch: pa.RecordBatch) -> npt.NDArray[np.bool_] | None:
    """Mark the quotes and trades a later one of the same kind and key supersedes before
    any other entry of the batch; None when there is nothing worth dropping."""
    kinds = batch.column(2)
    if not kinds.dictionary.equals(KIND_DICTIONARY):
        return None
    codes = kinds.indices.to_numpy()
    market = (codes == _QUOTE) | (codes == _TRADE)
    at = np.flatnonzero(market)
    if len(at) < 64:
        return None
    inst = pc.dictionary_encode(batch.column("instrument").take(at))
    venue = pc.dictionary_encode(batch.column("venue").take(at))
    n_venue = len(venue.dictionary)
    segment = np.cumsum(~market)[at]  # a new run of market data after every other entry
    key = (segment * len(inst.dictionary) + inst.indices.to_numpy()) * n_venue
    key = (key + venue.indices.to_numpy()) * 2 + (codes[at] == _TRADE)
    _, first_from_end = np.unique(key[::-1], return_index=True)
    drop = np.ones(len(at), dtype=bool)
    drop[len(at) - 1 - first_from_end] = False
    if not drop.any():
        return None
    superseded = np.zeros(len(codes), dtype=bool)
    superseded[at[drop]] = True
    return superseded


def _feed(reader: JournalReader, engine: Engine, verify: bool, every_tick: bool) -> ReplayResult:
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
        entries += batch.num_rows
        if not every_tick:
            superseded = _superseded(batch)
            if superseded is not None:
                batch = batch.filter(pa.array(~superseded))
        seqs = batch.column(0).to_pylist()
        causes = batch.column(1).to_pylist()
        for seq, cause, msg in zip(seqs, causes, decode_messages(batch)):
            if cause is None:
                if pos != n_actual and verify:  # an effect the journal lacks
                    divergence = diverged(input_seq, None, actual[pos])
                    break
                actual = handle(msg)
                n_actual = len(actual)
                pos = 0
                input_seq = seq
                input_msg = msg
                continue
            effects += 1
            if not verify:
                continue
            got = actual[pos] if pos < n_actual else None
            if got != msg or cause != input_seq:
                divergence = diverged(seq, msg, got)
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
