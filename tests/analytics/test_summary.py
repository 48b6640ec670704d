"""Run summary: numbers checked against a small hand-computed journal and the engine."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from analytics.summary import render, summarize
from engine.config import EngineConfig
from engine.journal import JournalWriter
from engine.messages import (
    Alert,
    AssetClass,
    Instrument,
    Message,
    OrderFilled,
    OrderRejected,
    OrderType,
    QuoteTick,
    Severity,
    Side,
    Signal,
    SignalRejected,
    SubmitOrder,
    TimeInForce,
)
from engine.replay import replay
from engine.runner import new_manifest

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "golden-demo"

X = Instrument(
    instrument="X",
    asset_class=AssetClass.EQUITY,
    currency="USD",
    price_precision=2,
    size_precision=0,
    venue_symbols={"V": "X"},
)


def quote(ts: int, bid: int, ask: int) -> QuoteTick:
    return QuoteTick(
        ts_recv=ts, instrument="X", venue="V", bid_price=bid, bid_size=5, ask_price=ask, ask_size=5
    )


def signal(ts: int, sid: str, side: Side, qty: int, ref: int) -> Signal:
    return Signal(
        ts_recv=ts,
        signal_id=sid,
        strategy="S",
        account="A",
        instrument="X",
        side=side,
        qty=qty,
        signal_price=ref,
    )


def order(ts: int, oid: str, sid: str, side: Side, qty: int) -> SubmitOrder:
    return SubmitOrder(
        ts_recv=ts,
        order_id=oid,
        venue="V",
        instrument="X",
        account="A",
        strategy="S",
        side=side,
        qty=qty,
        order_type=OrderType.MARKET,
        tif=TimeInForce.IOC,
        signal_id=sid,
    )


def fill(ts: int, oid: str, tid: str, price: int, qty: int, fee: int) -> OrderFilled:
    return OrderFilled(
        ts_recv=ts, order_id=oid, venue="V", trade_id=tid, price=price, qty=qty, fee=fee
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A journal written by hand: (message, cause) in seq order."""
    entries: list[tuple[Message, int | None]] = [
        (quote(1, 9_990, 10_010), None),  # 0
        (signal(2, "s1", Side.BUY, 10, 10_000), None),  # 1
        (order(2, "o1", "s1", Side.BUY, 10), 1),  # 2
        (fill(3, "o1", "t1", 10_010, 4, 20), None),  # 3
        (fill(3, "o1", "t1", 10_010, 4, 20), None),  # 4: a duplicate, not booked
        (fill(4, "o1", "t2", 10_020, 6, 30), None),  # 5
        (signal(5, "s2", Side.SELL, 5, 10_100), None),  # 6
        (order(5, "o2", "s2", Side.SELL, 5), 6),  # 7
        (fill(6, "o2", "t3", 10_050, 5, 25), None),  # 8
        (fill(7, "o9", "t9", 1, 1, 1), None),  # 9: unknown order
        (
            Alert(
                ts_recv=7,
                severity=Severity.CRITICAL,
                code="UNKNOWN_ORDER",
                text="no such order",
                order_id="o9",
                venue="V",
            ),
            9,
        ),  # 10
        (signal(8, "s3", Side.BUY, 1, 10_000), None),  # 11
        (
            SignalRejected(
                ts_recv=8,
                signal_id="s3",
                strategy="S",
                account="A",
                instrument="X",
                code="min_notional",
                reason="too small",
            ),
            11,
        ),  # 12
        (signal(9, "s4", Side.BUY, 3, 10_000), None),  # 13
        (order(9, "o3", "s4", Side.BUY, 3), 13),  # 14
        (OrderRejected(ts_recv=10, order_id="o3", venue="V", reason="closed"), None),  # 15
        (quote(11, 10_080, 10_100), None),  # 16: the mark, mid 100.90
    ]
    config = EngineConfig(run_id="hand", instruments=(X,))
    with JournalWriter(tmp_path, new_manifest(config, mode="sim"), fsync="none") as journal:
        for msg, cause in entries:
            journal.append(msg, cause)
    return tmp_path / "hand"


def test_summary_when_hand_journal_then_hand_computed_numbers(run_dir: Path) -> None:
    s = summarize(run_dir, wall_s=0.5)
    assert (s.entries, s.inputs, s.effects) == (17, 12, 5)
    assert (s.market_rows, s.signals, s.orders, s.fills, s.cancels) == (2, 4, 3, 3, 0)
    assert (s.orders_filled, s.order_fill_share) == (2, 2 / 3)
    assert (s.signal_rejects, s.order_rejects) == (1, 1)
    assert [(r.kind, r.code, r.count, r.example) for r in s.rejects] == [
        ("SignalRejected", "min_notional", 1, "too small"),
        ("OrderRejected", "V", 1, "closed"),
    ]
    assert s.alerts == {"UNKNOWN_ORDER": 1}
    (x,) = s.instruments
    assert (x.orders, x.ordered_qty, x.fills, x.filled_qty) == (3, 18, 3, 15)
    assert x.fill_rate == pytest.approx(15 / 18)
    # 4 @ 100.10 + 6 @ 100.20 + 5 @ 100.50
    assert x.notional == Decimal("1504.10")
    assert x.fees == Decimal("0.75") and s.fees == {"USD": Decimal("0.75")}
    # buys: +10 bps (qty 4), +20 bps (qty 6); sell at 100.50 vs 101.00: +49.50 bps (qty 5)
    slip = (4 * 10 + 6 * 20 + 5 * (50 / 10_100 * 10_000)) / 15
    assert x.slippage_bps == pytest.approx(slip)
    assert s.slippage_bps == pytest.approx(
        (4 * 10_010 * 10 + 6 * 10_020 * 20 + 5 * 10_050 * (50 / 10_100 * 10_000))
        / (4 * 10_010 + 6 * 10_020 + 5 * 10_050)
    )
    # long 10 at cost 1001.60; sell 5 at 100.50 removes 500.80: realised 1.70;
    # 5 left at cost 500.80, marked at 100.90: unrealised 3.70
    (pos,) = s.positions
    assert (pos.account, pos.qty, pos.avg_price, pos.mark) == (
        "A",
        5,
        Decimal("100.16"),
        Decimal("100.90"),
    )
    assert (pos.realised, pos.unrealised, pos.fees) == (
        Decimal("1.70"),
        Decimal("3.70"),
        Decimal("0.75"),
    )
    (acc,) = s.accounts
    assert (acc.realised, acc.unrealised, acc.fees, acc.net) == (
        Decimal("1.70"),
        Decimal("3.70"),
        Decimal("0.75"),
        Decimal("4.65"),
    )
    assert s.events_per_s == 24.0 and s.complete and s.status == "closed"


def test_render_when_summary_then_prints_every_section(run_dir: Path) -> None:
    console = Console(width=200, record=True)
    console.print(render(summarize(run_dir, wall_s=0.5)))
    text = console.export_text()
    for needle in (
        "run hand (sim, closed): 17 entries (12 inputs, 5 effects)",
        "orders with a fill 2 of 3 (66.7%)",
        "orders and fills by instrument",
        "min_notional",
        "net positions per account",
        "4.65",
        "wall time 0.50 s (24 events/s)",
    ):
        assert needle in text, needle


def test_summary_when_market_file_open_then_segment_not_read_and_incomplete(
    run_dir: Path,
) -> None:
    # the quotes are in the segment's market-data file; while it is open (the writer
    # seals it before the entries file) the segment is not read
    assert (run_dir / "market" / "000000.arrow").is_file()
    (run_dir / "market" / "000000.arrow").rename(run_dir / "market" / "000000.arrows")
    s = summarize(run_dir)
    assert not s.complete and (s.entries, s.market_rows, s.fills) == (0, 0, 0)


def test_summary_when_quote_has_a_cause_then_read_from_the_entries_file(tmp_path: Path) -> None:
    # an input with a cause is not market data: the mark comes from the entries file
    entries: list[tuple[Message, int | None]] = [
        (quote(1, 9_990, 10_010), None),
        (signal(2, "s1", Side.BUY, 10, 10_000), None),
        (order(2, "o1", "s1", Side.BUY, 10), 1),
        (fill(3, "o1", "t1", 10_010, 10, 20), None),
        (quote(4, 10_080, 10_100), 3),  # the mark, mid 100.90
    ]
    config = EngineConfig(run_id="hand", instruments=(X,))
    with JournalWriter(tmp_path, new_manifest(config, mode="sim"), fsync="none") as journal:
        for msg, cause in entries:
            journal.append(msg, cause)
    s = summarize(tmp_path / "hand")
    assert (s.entries, s.inputs, s.market_rows, s.complete) == (5, 3, 2, True)
    (pos,) = s.positions
    assert (pos.qty, pos.mark, pos.unrealised) == (10, Decimal("100.90"), Decimal("8.00"))


def test_summary_when_golden_journal_then_pnl_equals_engine_replay() -> None:
    s = summarize(GOLDEN)
    _, engine = replay(GOLDEN, verify=False)
    insts = {i.instrument: i for i in engine.config.instruments}
    got = {(p.account, p.instrument): p for p in s.positions}
    nets = list(engine.positions.net_positions())
    assert len(got) == len(nets)
    for (account, name), pos in nets:
        inst = insts[name]
        places = inst.price_precision + inst.size_precision
        line = got[account, name]
        assert line.qty == Decimal(pos.qty).scaleb(-inst.size_precision)
        assert line.realised == Decimal(pos.realised).scaleb(-places)
        assert line.fees == Decimal(pos.fees).scaleb(-places)
        mark = engine.mark_price(name)
        assert mark is not None
        assert line.unrealised == Decimal(pos.unrealised(mark)).scaleb(-places)
    assert s.fills == sum(len(o.trade_ids) for o in engine.orders.values())
    assert s.orders == len(engine.orders)
