"""What-if replay: a journal's market data and signals, run again under another config.

Invariants:
- Only the journal's *external* inputs are reused: market data (quotes, trades, book
  levels) and signals, with their original `ts_recv`. Venue responses, timers and
  operator inputs are not: the simulated venues answer the new run's own orders.
- The new run starts from the original run's setup, read from its manifest (instruments,
  engine config, simulated venues, seed); the what-if config changes only what it names:
  `seed`, `[router]` (with `fill_model`), `[risk]`, `[calendars]`, `[engine]`-level
  `ack_timeout`, or the `[[venues]]`.
- The result is an ordinary run with its own journal and manifest (mode "what-if", the
  source run recorded), so it replays, verifies and feeds TCA like any other.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics.fill_model import load_fill_model
from engine.codec import KIND_DICTIONARY, decode_messages
from engine.config import EngineConfig, RiskConfig, config_problem
from engine.fillmodel import FillModel
from engine.journal import JournalReader
from engine.messages import Signal
from engine.replay import engine_config
from engine.router import RouterConfig
from engine.sessions import CalendarConfigError, load_calendars
from sim.config import SimResult, VenueConfig
from sim.market import MARKET_SCHEMA, MTYPE_BOOK, MTYPE_QUOTE, MTYPE_TRADE
from sim.run import SimRun

_ALLOWED = ("seed", "router", "risk", "calendars", "venues")
_KIND = {name: i for i, name in enumerate(KIND_DICTIONARY.to_pylist())}
_MARKET_KINDS = {
    _KIND["QuoteTick"]: MTYPE_QUOTE,
    _KIND["TradeTick"]: MTYPE_TRADE,
    _KIND["BookDelta"]: MTYPE_BOOK,
}


class WhatIfError(ValueError):
    """A what-if config or source run that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class WhatIfSetup:
    """The engine config, venues and fill model of a what-if run."""

    config: EngineConfig
    venues: tuple[VenueConfig, ...]
    fill_model: FillModel | None


def journal_market(run_dir: Path) -> pa.Table:
    """Return a run's journaled market data as a sim market table (MARKET_SCHEMA)."""
    pieces: list[pa.Table] = []
    for batch in JournalReader(run_dir).batches():
        codes = batch.column("kind").indices.to_numpy(zero_copy_only=False)
        mtype = np.full(len(codes), -1, dtype=np.int8)
        for code, value in _MARKET_KINDS.items():
            mtype[codes == code] = value
        keep = mtype >= 0
        if not keep.any():
            continue
        rows = batch.filter(pa.array(keep))
        mt = pa.array(mtype[keep], pa.int8())
        is_trade = pc.equal(mt, MTYPE_TRADE)
        side_trade = _enum_index(rows.column("aggressor"))
        side_book = _enum_index(rows.column("side"))
        pieces.append(
            pa.table(
                {
                    "ts": rows.column("ts_recv"),
                    "mtype": mt,
                    "instrument": rows.column("instrument").cast(pa.string()),
                    "venue": rows.column("venue").cast(pa.string()),
                    "bid_price": rows.column("bid_price"),
                    "bid_size": rows.column("bid_size"),
                    "ask_price": rows.column("ask_price"),
                    "ask_size": rows.column("ask_size"),
                    "price": rows.column("price"),
                    "qty": rows.column("qty"),
                    "side": pc.if_else(is_trade, side_trade, side_book),
                    "clear": rows.column("clear"),
                    "ts_event": rows.column("ts_event"),
                },
                schema=MARKET_SCHEMA,
            )
        )
    if not pieces:
        return MARKET_SCHEMA.empty_table()
    return pa.concat_tables(pieces)


def _enum_index(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Return the int8 index of a dictionary column (Side: BUY 0, SELL 1), nulls kept."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        return array.indices.cast(pa.int8())
    return pa.nulls(len(array), pa.int8())


def journal_signals(run_dir: Path) -> list[Signal]:
    """Return a run's journaled signals, in seq order."""
    code = _KIND["Signal"]
    out: list[Signal] = []
    for batch in JournalReader(run_dir).batches():
        codes = batch.column("kind").indices.to_numpy(zero_copy_only=False)
        mask = codes == code
        if mask.any():
            out += [
                m for m in decode_messages(batch.filter(pa.array(mask))) if isinstance(m, Signal)
            ]
    return out


def whatif_setup(run_dir: Path, config_path: Path, run_id: str) -> WhatIfSetup:
    """Combine a run's own setup (from its manifest) with the changes a what-if names."""
    manifest = JournalReader(run_dir).manifest
    base = engine_config(manifest)
    sim = manifest.config.get("sim") or {}
    try:
        venues = msgspec.convert(sim.get("venues", []), tuple[VenueConfig, ...])
    except msgspec.ValidationError as exc:
        raise WhatIfError(f"run {manifest.run_id}: manifest sim.venues unreadable: {exc}") from None
    try:
        with config_path.open("rb") as f:
            raw: dict[str, Any] = tomllib.load(f, parse_float=Decimal)
    except FileNotFoundError:
        raise WhatIfError(f"--what-if {config_path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise WhatIfError(f"--what-if {config_path}: not valid TOML: {exc}") from None
    for key in raw:
        if key not in _ALLOWED:
            raise WhatIfError(
                f"--what-if {config_path}: {key}: unknown key: expected one of "
                f"{', '.join(_ALLOWED)} (the rest comes from run {manifest.run_id})"
            )
    changes: dict[str, Any] = {"run_id": run_id}
    fill_model: FillModel | None = None
    sha: str | None = None
    try:
        if "seed" in raw:
            changes["seed"] = msgspec.convert(raw["seed"], int)
        if "risk" in raw:
            risk = msgspec.convert(_floats(raw["risk"]), RiskConfig)
            problem = config_problem(risk)
            if problem is not None:
                raise WhatIfError(f"--what-if {config_path}: {problem}")
            changes["risk"] = risk
        if "router" in raw:
            router_raw = dict(raw["router"])
            model_path = router_raw.pop("fill_model", None)
            changes["router"] = msgspec.convert(_floats(router_raw), RouterConfig)
            if model_path is not None:
                path = Path(str(model_path))
                if not path.is_absolute():
                    path = config_path.parent / path
                fill_model, _ = load_fill_model(path)
        if "calendars" in raw:
            changes["calendars"] = load_calendars(raw["calendars"])
        if "venues" in raw:
            venues = msgspec.convert(_floats(raw["venues"]), tuple[VenueConfig, ...])
    except (msgspec.ValidationError, CalendarConfigError, ValueError) as exc:
        if isinstance(exc, WhatIfError):
            raise
        raise WhatIfError(f"--what-if {config_path}: {exc}") from None
    if fill_model is None and "router" not in raw and base.fill_model_sha256 is not None:
        from engine.replay import load_run_fill_model

        fill_model = load_run_fill_model(run_dir, base)  # same router, same model
    if fill_model is not None:
        from engine.fillmodel import model_sha256

        sha = model_sha256(fill_model)
    changes["fill_model_sha256"] = sha
    config = msgspec.structs.replace(base, **changes)
    return WhatIfSetup(config=config, venues=venues, fill_model=fill_model)


def _floats(value: Any) -> Any:
    """Turn the Decimals of parsed TOML into floats, recursively."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def run_what_if(run_dir: Path, config_path: Path, journals: Path, run_id: str) -> SimResult:
    """Run a journal's market data and signals under a what-if config; return the new run."""
    setup = whatif_setup(run_dir, config_path, run_id)
    market = journal_market(run_dir)
    signals = journal_signals(run_dir)
    sim = SimRun(
        setup.config,
        setup.venues,
        journals,
        mode="what-if",
        fill_model=setup.fill_model,
    )
    return sim.run(market.to_batches(max_chunksize=65_536), signals)
