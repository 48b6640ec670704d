"""`--config`: a TOML file with the instruments, venues, engine settings and seed of a run.

Schema: docs/inputs.md ("Config"); a sample matching the demo: tape/samples/sim.toml.

Invariants:
- Numbers are read exactly: TOML floats are parsed as `Decimal` (tomllib `parse_float`),
  so `tick_size = 0.01` is 1/100, never a binary float.
- Human units in, integer units out: tick_size (price), lot_size and min_qty (size),
  min_notional (currency) of instruments and max_order_qty (size) become integers in
  instrument or notional units. A value that is not on its precision grid is an error,
  never rounded.
- Shapes and types are checked by msgspec (`msgspec.convert`); unknown keys are errors
  (the venue struct does not forbid them, so they are checked here against its fields).
- Every error names the file and the key path, with 0-based indexes into arrays of
  tables: `config.toml: venues[1].taker_fee_bps: expected int, got str` is the second
  `[[venues]]` table.
- Loading reads one file and nothing else: no environment, no clock.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from engine.config import EngineConfig, RiskConfig, config_problem
from engine.instruments import instrument_problem
from engine.messages import AssetClass, Instrument
from engine.router import RouterConfig
from engine.sessions import Calendar, CalendarConfigError, load_calendars
from sim.config import VenueConfig

__all__ = ["ConfigError", "SimConfig", "demo_config", "load_config"]

DEFAULT_SEED = 7  # the demo's: `tape sim` without --config runs the demo's setup
DEFAULT_ACK_TIMEOUT_NS = 5_000_000_000
_MAX_PRECISION = 18
_TOP_KEYS = ("seed", "engine", "instruments", "venues", "risk", "router", "calendars")


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and key path."""


class SimConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a sim run is set up from, in integer units."""

    instruments: tuple[Instrument, ...]
    venues: tuple[VenueConfig, ...]
    seed: int = DEFAULT_SEED
    max_order_qty: dict[str, int] = {}  # instrument or "*" -> size units
    default_venue: dict[str, str] = {}
    ack_timeout_ns: int = DEFAULT_ACK_TIMEOUT_NS
    risk: RiskConfig = RiskConfig()
    router: RouterConfig | None = None
    fill_model: str | None = None  # path of a fitted fill model (Parquet), for the router
    calendars: dict[str, Calendar] = {}  # instrument or "*" -> trading calendar

    def engine_config(
        self, run_id: str, seed: int | None = None, fill_model_sha256: str | None = None
    ) -> EngineConfig:
        """Return the engine config of a run with this setup (`seed` overrides the file's)."""
        return EngineConfig(
            run_id=run_id,
            seed=self.seed if seed is None else seed,
            instruments=self.instruments,
            max_order_qty=dict(self.max_order_qty),
            default_venue=dict(self.default_venue),
            ack_timeout_ns=self.ack_timeout_ns,
            risk=self.risk,
            router=self.router,
            fill_model_sha256=fill_model_sha256,
            calendars=dict(self.calendars),
        )


def demo_config() -> SimConfig:
    """Return the demo's setup: its instruments, venues, limits and seed."""
    from tape.demo import demo_instruments, demo_venues

    return SimConfig(
        instruments=demo_instruments(),
        venues=demo_venues(),
        seed=DEFAULT_SEED,
        max_order_qty={"*": 100_000},
    )


# --- the file's shape -------------------------------------------------------------------


class _InstrumentSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    instrument: str
    asset_class: AssetClass
    currency: str
    price_precision: int
    size_precision: int
    tick_size: Decimal | None = None  # price, human units; default one price unit
    lot_size: Decimal | None = None  # size, human units; default one size unit
    min_qty: Decimal = Decimal(0)  # size, human units
    min_notional: Decimal = Decimal(0)  # currency
    multiplier: int = 1
    venue_symbols: dict[str, str] = {}
    sector: str | None = None
    country: str | None = None
    expiry: int | None = None  # ns since the epoch (futures and options)


class _EngineSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_order_qty: dict[str, Decimal] = {}  # instrument or "*" -> size, human units
    default_venue: dict[str, str] = {}
    ack_timeout: Decimal = Decimal(DEFAULT_ACK_TIMEOUT_NS).scaleb(-9)  # seconds


class _RouterSpec(RouterConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fill_model: str | None = None  # path of a fitted fill model, relative to the config file


class _ConfigSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    seed: int = DEFAULT_SEED
    engine: _EngineSpec = msgspec.field(default_factory=_EngineSpec)
    instruments: list[_InstrumentSpec]
    risk: RiskConfig = RiskConfig()
    router: _RouterSpec | None = None
    calendars: dict[str, Any] = {}


_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _path(*parts: str | int) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part:
            out += f".{part}" if out else part
    return out


def _problem(exc: msgspec.ValidationError, prefix: str = "") -> str:
    """Say a msgspec validation error as `key.path: expected X, got Y`."""
    m = _AT.match(str(exc))
    assert m is not None
    text, path = m["text"], (m["path"] or "").lstrip(".")
    where = prefix + ("." if prefix and path and not path.startswith("[") else "") + path
    if e := re.fullmatch(r"Expected `(.+?)`, got `(.+?)`", text):
        expected = e[1].replace(" | null", "")
        got = "float" if e[2] == "decimal" else e[2]
        return f"{where}: expected {expected}, got {got}"
    if e := re.fullmatch(r"Object missing required field `(.+?)`", text):
        return f"{_path(where, e[1])}: missing: required"
    if e := re.fullmatch(r"Object contains unknown field `(.+?)`", text):
        return f"{_path(where, e[1])}: unknown key: expected one of {_keys_at(where)}"
    if e := re.fullmatch(r"Invalid enum value (.+)", text):
        allowed = ", ".join(m.value for m in AssetClass)
        return f"{where}: expected one of {allowed}, got {e[1]}"
    return f"{where}: {text}" if where else text


def _keys_at(where: str) -> str:
    """Name the keys allowed in the table at a key path."""
    if where.startswith("venues"):
        return ", ".join(f.name for f in msgspec.structs.fields(VenueConfig))
    struct: Any = _ConfigSpec
    parts = [p for p in re.sub(r"\[\d+\]", "", where).split(".") if p]
    pending_key = False  # the next part is a dict key, not a field
    for part in parts:
        if pending_key:
            pending_key = False
            continue
        hints = typing.get_type_hints(struct)
        tp = hints.get(part)
        if tp is None:
            break
        tp = _unwrap(tp)
        if typing.get_origin(tp) is dict:
            tp = _unwrap(typing.get_args(tp)[1])
            pending_key = True
        if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
            break
        struct = tp
    return ", ".join(f.name for f in msgspec.structs.fields(struct))


def _unwrap(tp: Any) -> Any:
    """Strip `X | None` and `list[X]` down to X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (types.UnionType, typing.Union) and len(args) == 1:
        return _unwrap(args[0])
    if typing.get_origin(tp) in (list, tuple) and args:
        return _unwrap(args[0])
    return tp


def _floats(value: Any) -> Any:
    """Turn the Decimals of a parsed TOML value into floats (for structs that want float)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def _units(value: Decimal, places: int, where: str, what: str) -> int:
    """Turn a human-unit decimal into integer units, exactly; raise if off the grid."""
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise ConfigError(
            f"{where}: expected a multiple of {Decimal(1).scaleb(-places):f} ({what}), got {value}"
        )
    return int(scaled)


# --- loading ----------------------------------------------------------------------------


def load_config(path: str | Path) -> SimConfig:
    """Read a TOML config file into a SimConfig; raise ConfigError naming file and key."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f, parse_float=Decimal)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = _build(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if config.fill_model is not None and not Path(config.fill_model).is_absolute():
        config = msgspec.structs.replace(config, fill_model=str(path.parent / config.fill_model))
    return config


def _build(raw: dict[str, Any]) -> SimConfig:
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{key}: unknown key: expected one of {', '.join(_TOP_KEYS)}")
    for key in ("instruments", "venues"):
        if key not in raw:
            raise ConfigError(f"{key}: missing: required (at least one [[{key}]] table)")
    venues_raw = raw["venues"]
    try:
        spec = msgspec.convert({k: v for k, v in raw.items() if k != "venues"}, _ConfigSpec)
    except msgspec.ValidationError as exc:
        raise ConfigError(_problem(exc)) from None
    venues = _venues(venues_raw)
    names = [v.name for v in venues]
    instruments = tuple(_instrument(s, i, names) for i, s in enumerate(spec.instruments))
    if not instruments:
        raise ConfigError("instruments: expected at least one [[instruments]] table, got none")
    seen: dict[str, int] = {}
    for i, inst in enumerate(instruments):
        if inst.instrument in seen:
            raise ConfigError(
                f"instruments[{i}].instrument: expected a name not used before, got "
                f"{inst.instrument!r} (also instruments[{seen[inst.instrument]}])"
            )
        seen[inst.instrument] = i
    by_name = {i.instrument: i for i in instruments}
    engine = spec.engine
    problem = config_problem(spec.risk)
    if problem is not None:
        raise ConfigError(problem)
    router: RouterConfig | None = None
    fill_model: str | None = None
    if spec.router is not None:
        fields = msgspec.structs.asdict(spec.router)
        fill_model = fields.pop("fill_model")
        router = RouterConfig(**fields)
    try:
        calendars = load_calendars(spec.calendars)
    except CalendarConfigError as exc:
        raise ConfigError(str(exc)) from None
    for name in calendars:
        if name != "*" and name not in by_name:
            raise ConfigError(
                f'calendars.{name}: expected an instrument ({", ".join(by_name)}) or "*"'
            )
    return SimConfig(
        calendars=calendars,
        risk=spec.risk,
        router=router,
        fill_model=fill_model,
        instruments=instruments,
        venues=venues,
        seed=spec.seed,
        max_order_qty=_max_order_qty(engine.max_order_qty, by_name),
        default_venue=_default_venue(engine.default_venue, by_name),
        ack_timeout_ns=_ack_timeout(engine.ack_timeout),
    )


def _venues(raw: Any) -> tuple[VenueConfig, ...]:
    if not isinstance(raw, list) or not raw:
        got = type(raw).__name__ if not isinstance(raw, list) else "none"
        raise ConfigError(f"venues: expected at least one [[venues]] table, got {got}")
    fields = [f.name for f in msgspec.structs.fields(VenueConfig)]
    venues = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"venues[{i}]: expected a table, got {type(item).__name__}")
        for key in item:
            if key not in fields:
                raise ConfigError(
                    f"venues[{i}].{key}: unknown key: expected one of {', '.join(fields)}"
                )
        try:
            venues.append(msgspec.convert(_floats(item), VenueConfig))
        except msgspec.ValidationError as exc:
            raise ConfigError(_problem(exc, f"venues[{i}]")) from None
    seen: dict[str, int] = {}
    for i, venue in enumerate(venues):
        if not venue.name:
            raise ConfigError(f"venues[{i}].name: expected a non-empty name, got ''")
        if venue.name in seen:
            raise ConfigError(
                f"venues[{i}].name: expected a name not used before, got {venue.name!r} "
                f"(also venues[{seen[venue.name]}])"
            )
        seen[venue.name] = i
    return tuple(venues)


def _instrument(spec: _InstrumentSpec, i: int, venues: list[str]) -> Instrument:
    at = f"instruments[{i}]"
    pp, sp = spec.price_precision, spec.size_precision
    for key, value in (("price_precision", pp), ("size_precision", sp)):
        if not 0 <= value <= _MAX_PRECISION:
            raise ConfigError(f"{at}.{key}: expected 0..{_MAX_PRECISION}, got {value}")
    for venue in spec.venue_symbols:
        if venue not in venues:
            raise ConfigError(
                f"{at}.venue_symbols.{venue}: expected a venue of [[venues]] "
                f"({', '.join(venues)}), got {venue!r}"
            )
    price = f"price_precision {pp}"
    size = f"size_precision {sp}"
    for key, step in (("tick_size", spec.tick_size), ("lot_size", spec.lot_size)):
        if step is not None and step <= 0:
            raise ConfigError(f"{at}.{key}: expected > 0, got {step}")
    tick = 1 if spec.tick_size is None else _units(spec.tick_size, pp, f"{at}.tick_size", price)
    lot = 1 if spec.lot_size is None else _units(spec.lot_size, sp, f"{at}.lot_size", size)
    inst = Instrument(
        instrument=spec.instrument,
        asset_class=spec.asset_class,
        currency=spec.currency,
        price_precision=pp,
        size_precision=sp,
        tick_size=tick,
        lot_size=lot,
        min_qty=_units(spec.min_qty, sp, f"{at}.min_qty", size),
        min_notional=_units(
            spec.min_notional, pp + sp, f"{at}.min_notional", f"notional precision {pp + sp}"
        ),
        multiplier=spec.multiplier,
        venue_symbols=dict(spec.venue_symbols),
        sector=spec.sector,
        country=spec.country,
        expiry=spec.expiry,
    )
    problem = instrument_problem(inst)
    if problem is not None:
        raise ConfigError(f"{at}: {problem} (in integer units)")
    return inst


def _max_order_qty(raw: dict[str, Decimal], instruments: dict[str, Instrument]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in raw.items():
        at = f'engine.max_order_qty."{name}"' if name == "*" else f"engine.max_order_qty.{name}"
        if value < 0:
            raise ConfigError(f"{at}: expected >= 0, got {value}")
        if name == "*":
            precisions = sorted({i.size_precision for i in instruments.values()})
            if len(precisions) > 1:
                listed = ", ".join(
                    f"{i.instrument} {i.size_precision}" for i in instruments.values()
                )
                raise ConfigError(
                    f"{at}: expected one size_precision among instruments to convert a "
                    f"default, got several ({listed}): give max_order_qty per instrument"
                )
            out[name] = _units(value, precisions[0], at, f"size_precision {precisions[0]}")
            continue
        inst = instruments.get(name)
        if inst is None:
            known = ", ".join(instruments)
            raise ConfigError(f'{at}: expected an instrument ({known}) or "*", got {name!r}')
        out[name] = _units(value, inst.size_precision, at, f"size_precision {inst.size_precision}")
    return out


def _default_venue(raw: dict[str, str], instruments: dict[str, Instrument]) -> dict[str, str]:
    for name, venue in raw.items():
        at = f"engine.default_venue.{name}"
        inst = instruments.get(name)
        if inst is None:
            raise ConfigError(
                f"{at}: expected an instrument ({', '.join(instruments)}), got {name!r}"
            )
        if venue not in inst.venue_symbols:
            listed = ", ".join(inst.venue_symbols) or "none"
            raise ConfigError(f"{at}: expected a venue listed for {name} ({listed}), got {venue!r}")
    return dict(raw)


def _ack_timeout(seconds: Decimal) -> int:
    ns = _units(seconds, 9, "engine.ack_timeout", "seconds, to the nanosecond")
    if ns <= 0:
        raise ConfigError(f"engine.ack_timeout: expected > 0 seconds, got {seconds}")
    return ns
