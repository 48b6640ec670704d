"""`--config` TOML: human units to integer units, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tape.config import ConfigError, demo_config, load_config

SAMPLE = Path(__file__).resolve().parents[2] / "tape" / "samples" / "sim.toml"

INSTRUMENT = """
[[instruments]]
instrument = "X"
asset_class = "CRYPTO"
currency = "USD"
price_precision = 2
size_precision = 4
venue_symbols = { A = "X/USD", B = "XUSD" }
"""
VENUES = """
[[venues]]
name = "A"
[[venues]]
name = "B"
"""


def config_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).removeprefix(f"{path}: ")


def test_sample_when_loaded_then_equals_demo_setup() -> None:
    assert load_config(SAMPLE) == demo_config()


def test_config_when_human_units_then_exact_integer_units(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "seed = 3\n[engine]\nack_timeout = 0.25\n"
        'max_order_qty = { X = 1.5 }\ndefault_venue = { X = "B" }\n'
        + INSTRUMENT.replace(
            "size_precision = 4",
            "size_precision = 4\ntick_size = 0.05\nlot_size = 0.001\nmin_qty = 0.01\n"
            'min_notional = "12.5"\nmultiplier = 2',
        )
        + VENUES.replace('name = "B"', 'name = "B"\ntaker_fee_bps = -2\nlatency_ns = 7')
    )
    cfg = load_config(path)
    (inst,) = cfg.instruments
    assert (inst.tick_size, inst.lot_size, inst.min_qty, inst.min_notional) == (
        5,
        10,
        100,
        12_500_000,
    )
    assert inst.multiplier == 2 and inst.venue_symbols == {"A": "X/USD", "B": "XUSD"}
    assert cfg.max_order_qty == {"X": 15_000}
    assert cfg.default_venue == {"X": "B"}
    assert cfg.ack_timeout_ns == 250_000_000
    assert cfg.venues[1].taker_fee_bps == -2 and cfg.venues[1].latency_ns == 7
    engine = cfg.engine_config("r1", seed=None)
    assert (engine.run_id, engine.seed, engine.ack_timeout_ns) == ("r1", 3, 250_000_000)
    assert cfg.engine_config("r1", seed=9).seed == 9


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            INSTRUMENT + VENUES.replace('name = "B"', 'name = "B"\ntaker_fee_bps = "5"'),
            "venues[1].taker_fee_bps: expected int, got str",
        ),
        (
            INSTRUMENT + VENUES.replace('name = "B"', 'name = "B"\nlatency_ns = 2.5'),
            "venues[1].latency_ns: expected int, got float",
        ),
        (
            INSTRUMENT + VENUES.replace('name = "A"', 'name = "A"\ntaker_fee = 5'),
            "venues[0].taker_fee: unknown key: expected one of name, maker_fee_bps, "
            "taker_fee_bps, ",  # ... and the other fields of VenueConfig
        ),
        (
            INSTRUMENT.replace("price_precision = 2", 'price_precision = "2"') + VENUES,
            "instruments[0].price_precision: expected int, got str",
        ),
        (
            INSTRUMENT.replace('"CRYPTO"', '"CRYPT"') + VENUES,
            "instruments[0].asset_class: expected one of CRYPTO, EQUITY, FX, FUTURE, OPTION, "
            "got 'CRYPT'",
        ),
        (
            INSTRUMENT.replace("size_precision = 4", "size_precision = 4\ntick = 0.01") + VENUES,
            "instruments[0].tick: unknown key: expected one of instrument, asset_class, "
            "currency, price_precision, size_precision, tick_size, lot_size, min_qty, "
            "min_notional, multiplier, venue_symbols, sector, country, expiry",
        ),
        (
            INSTRUMENT.replace("size_precision = 4", "size_precision = 4\ntick_size = 0.001")
            + VENUES,
            "instruments[0].tick_size: expected a multiple of 0.01 (price_precision 2), got 0.001",
        ),
        (
            INSTRUMENT.replace("size_precision = 4", "size_precision = 4\nlot_size = 0") + VENUES,
            "instruments[0].lot_size: expected > 0, got 0",
        ),
        (
            INSTRUMENT.replace('B = "XUSD"', 'C = "XUSD"') + VENUES,
            "instruments[0].venue_symbols.C: expected a venue of [[venues]] (A, B), got 'C'",
        ),
        (
            INSTRUMENT + INSTRUMENT + VENUES,
            "instruments[1].instrument: expected a name not used before, got 'X' "
            "(also instruments[0])",
        ),
        (
            INSTRUMENT + VENUES.replace('name = "B"', 'name = "A"'),
            "venues[1].name: expected a name not used before, got 'A' (also venues[0])",
        ),
        (
            INSTRUMENT + VENUES.replace('name = "B"', 'name = "B"\ndepth_levels = 0'),
            "venues[1]: VenueConfig 'B': depth_levels must be >= 1, got 0",
        ),
        (
            "[engine]\nmax_order_qty = { Y = 1 }\n" + INSTRUMENT + VENUES,
            "engine.max_order_qty.Y: expected an instrument (X) or \"*\", got 'Y'",
        ),
        (
            "[engine]\nmax_order_qty = { X = 0.00001 }\n" + INSTRUMENT + VENUES,
            "engine.max_order_qty.X: expected a multiple of 0.0001 (size_precision 4), got 0.00001",
        ),
        (
            '[engine]\ndefault_venue = { X = "C" }\n' + INSTRUMENT + VENUES,
            "engine.default_venue.X: expected a venue listed for X (A, B), got 'C'",
        ),
        (
            "[engine]\nack_timeout = 0\n" + INSTRUMENT + VENUES,
            "engine.ack_timeout: expected > 0 seconds, got 0",
        ),
        (
            "[engine]\nack = 1\n" + INSTRUMENT + VENUES,
            "engine.ack: unknown key: expected one of max_order_qty, default_venue, ack_timeout",
        ),
        ('seed = "x"\n' + INSTRUMENT + VENUES, "seed: expected int, got str"),
        (
            "colour = 1\n" + INSTRUMENT + VENUES,
            "colour: unknown key: expected one of seed, engine, instruments, venues, risk, router, "
            "calendars",
        ),
        (
            "[risk.limits.firm]\nmax_gross_notional = -1\n" + INSTRUMENT + VENUES,
            "risk.limits.firm.max_gross_notional must be >= 0, got -1",
        ),
        (
            "[risk.limits.accounts.acc]\nmax_net_qty = 5\n" + INSTRUMENT + VENUES,
            "risk.limits.accounts.acc.max_net_qty: quantity limits are in an instrument's size "
            "units: expected them under risk.limits.instruments.<name> or risk.limits.firm "
            "(a default for every instrument)",
        ),
        (
            "[risk.limits.firm]\nmax_gros = 1\n" + INSTRUMENT + VENUES,
            "risk.limits.firm.max_gros: unknown key: expected one of max_order_qty, "
            "max_order_notional, max_net_qty, max_gross_qty, max_net_notional, "
            "max_gross_notional, max_orders_per_window, daily_loss, max_drawdown",
        ),
        (
            "[router]\ntop_k = 4\n" + INSTRUMENT + VENUES,
            "router: RouterConfig.top_k: expected 1 to 3, got 4",
        ),
        (VENUES, "instruments: missing: required (at least one [[instruments]] table)"),
        (INSTRUMENT, "venues: missing: required (at least one [[venues]] table)"),
    ],
)
def test_config_when_invalid_then_error_names_key_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = config_error(tmp_path, text)
    assert message.startswith(expected) if expected.endswith(", ") else message == expected


def test_config_when_default_max_qty_and_precisions_differ_then_error(tmp_path: Path) -> None:
    other = INSTRUMENT.replace('"X"', '"Y"').replace("size_precision = 4", "size_precision = 0")
    text = '[engine]\nmax_order_qty = { "*" = 1 }\n' + INSTRUMENT + other + VENUES
    assert config_error(tmp_path, text) == (
        'engine.max_order_qty."*": expected one size_precision among instruments to convert '
        "a default, got several (X 4, Y 0): give max_order_qty per instrument"
    )


def test_config_when_not_toml_or_missing_then_error(tmp_path: Path) -> None:
    assert config_error(tmp_path, "x = [").startswith("not valid TOML: ")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_config_when_risk_and_router_then_engine_config_carries_them(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[risk]\nmoney_precision = 2\n[risk.limits.firm]\nmax_gross_notional = 500\n"
        '[router]\nmode = "model"\ntop_k = 2\nfill_model = "m.parquet"\n' + INSTRUMENT + VENUES
    )
    cfg = load_config(path)
    engine = cfg.engine_config("r", fill_model_sha256="ab")
    assert engine.risk.limits.firm.max_gross_notional == 500
    assert engine.router is not None and (engine.router.mode, engine.router.top_k) == ("model", 2)
    assert engine.fill_model_sha256 == "ab"
    assert cfg.fill_model == str(tmp_path / "m.parquet")


def test_config_when_docs_risk_example_then_it_loads(tmp_path: Path) -> None:
    """The TOML example of docs/risk.md is a working config (docs that cannot rot)."""
    text = (Path(__file__).parents[2] / "docs" / "risk.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    example = example.replace("BTC-USD", "X").replace("ACC-1", "acc").replace("ALPHA", "A")
    example = example.replace('do_not_trade = ["SOL-USD"]', 'do_not_trade = ["X"]')
    path = tmp_path / "c.toml"
    path.write_text(example + '\n[calendars."*"]\nkind = "crypto"\n' + INSTRUMENT + VENUES)
    cfg = load_config(path)
    engine = cfg.engine_config("r")
    assert engine.risk.limits.instruments["X"].max_net_qty == 200000
    assert engine.risk.limits.exposure["asset_class:CRYPTO"] == 8_000_000_00
    assert engine.risk.breaker.threshold_bps == 500
    assert engine.calendars["*"].is_open(1_767_225_600_000_000_000)
