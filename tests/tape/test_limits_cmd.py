"""`tape limits RUN`: configured limits, overrides in force, the operators' trail, usage."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from engine.config import EngineConfig, LimitsConfig, LimitSet, RiskConfig
from engine.core import Engine
from engine.journal import JournalWriter
from engine.messages import (
    AssetClass,
    Instrument,
    KillSwitch,
    LimitOverride,
    Message,
    OrderAccepted,
    OrderFilled,
    QuoteTick,
    Resume,
    Side,
    Signal,
    TradingState,
)
from engine.runner import Runner, new_manifest
from tape.cli import build_parser

BTC = Instrument(
    instrument="BTC-USD",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=2,
    size_precision=0,
    venue_symbols={"V1": "BTCUSD"},
)


def record(tmp: Path) -> Path:
    risk = RiskConfig(
        limits=LimitsConfig(
            firm=LimitSet(max_gross_notional=1_000_000, max_orders_per_window=50),
            instruments={"BTC-USD": LimitSet(max_net_qty=40)},
        )
    )
    cfg = EngineConfig(run_id="lim", instruments=(BTC,), risk=risk)
    journal = JournalWriter(tmp, new_manifest(cfg, mode="test"))
    runner = Runner(Engine(cfg), journal)
    inputs: list[Message] = [
        QuoteTick(
            ts_recv=1,
            instrument="BTC-USD",
            venue="V1",
            bid_price=9_990,
            bid_size=5,
            ask_price=10_010,
            ask_size=5,
        ),
        Signal(
            ts_recv=2,
            signal_id="s1",
            strategy="st",
            account="acc",
            instrument="BTC-USD",
            side=Side.BUY,
            qty=10,
        ),
        OrderAccepted(ts_recv=3, order_id="lim-1", venue="V1"),
        OrderFilled(ts_recv=4, order_id="lim-1", venue="V1", trade_id="x", price=10_010, qty=4),
        LimitOverride(
            ts_recv=5,
            operator="ann",
            reason="client call",
            limit="max_net_qty",
            scope="instrument:BTC-USD",
            value=60,
            expires_at=10**12,
        ),
        KillSwitch(
            ts_recv=6,
            operator="bob",
            reason="test",
            scope="strategy:st",
            state=TradingState.REDUCING,
        ),
        Resume(ts_recv=7, operator="bob", reason="done", scope="strategy:st"),
    ]
    for msg in inputs:
        runner.process(msg)
    runner.close()
    return journal.run_dir


def run_cli(*argv: str) -> str:
    args = build_parser().parse_args(list(argv))
    buffer = io.StringIO()
    assert args.func(args, Console(file=buffer, width=200)) == 0
    return buffer.getvalue()


def test_limits_when_run_has_overrides_then_config_override_trail_and_usage(tmp_path: Path) -> None:
    run_dir = record(tmp_path)
    text = run_cli("limits", str(run_dir))
    lines = text.splitlines()
    assert any(
        "instrument BTC-USD" in line
        and "max_net_qty" in line
        and "40" in line
        and "60" in line
        and "override by ann" in line
        for line in lines
    ), text
    assert any(
        "firm" in line and "max_gross_notional" in line and "1,000,000" in line for line in lines
    )
    # The audit trail names who did what and why, in seq order.
    trail = [
        line
        for line in lines
        if "LimitOverride" in line or "KillSwitch" in line or "Resume" in line
    ]
    assert len(trail) == 3
    assert "ann" in trail[0] and "max_net_qty = 60 at instrument:BTC-USD" in trail[0]
    assert "client call" in trail[0]
    assert "bob" in trail[1] and "REDUCING strategy:st" in trail[1]
    # Usage: 4 filled plus 6 still working, the figure the checks compare with 60.
    assert any(
        "acc BTC-USD" in line and "position 4, working +6/-0" in line and " 10 " in line
        for line in lines
    ), text
    assert any(
        "orders in the rate window" in line and " 1 " in line and "50" in line for line in lines
    )
    assert "every scope ACTIVE" in text
