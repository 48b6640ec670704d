"""TCA: per-order numbers on a hand-built journal, the engine's own view of a faulty sim
run, crashed runs, run discovery and the aggregates."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from analytics.tca import (
    BY_FIELDS,
    TcaError,
    _attach,
    _collect,
    aggregate,
    find_runs,
    load_tca,
    open_run,
    parse_by,
    scan_run,
    venue_matrix,
)
from engine.config import EngineConfig
from engine.journal import JournalWriter, read_manifest
from engine.messages import (
    Alert,
    AssetClass,
    Instrument,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderType,
    QuoteTick,
    Severity,
    Side,
    Signal,
    SubmitOrder,
    TimeInForce,
)
from engine.runner import new_manifest
from sim.config import VenueConfig
from sim.faults import FaultPlan
from sim.run import SimRun
from tape.demo import demo_instruments, demo_market, demo_signals

S = 1_000_000_000
MS = 1_000_000
X = Instrument(
    instrument="X",
    asset_class=AssetClass.EQUITY,
    currency="USD",
    price_precision=2,
    size_precision=0,
    multiplier=1,
    venue_symbols={"V": "X", "W": "X"},
)


def quote(ts: int, bid: int, ask: int, venue: str = "V") -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        instrument="X",
        venue=venue,
        bid_price=bid,
        bid_size=5,
        ask_price=ask,
        ask_size=5,
    )


def signal(ts: int, sid: str, side: Side, qty: int, ref: int) -> Signal:
    return Signal(
        ts_recv=ts,
        ts_event=ts - 100 * MS,
        signal_id=sid,
        strategy="S",
        account="A",
        instrument="X",
        side=side,
        qty=qty,
        signal_price=ref,
    )


def order(
    ts: int, oid: str, sid: str, side: Side, qty: int, price: int | None = None
) -> SubmitOrder:
    return SubmitOrder(
        ts_recv=ts,
        order_id=oid,
        venue="V",
        instrument="X",
        account="A",
        strategy="S",
        side=side,
        qty=qty,
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        price=price,
        tif=TimeInForce.GTC,
        signal_id=sid,
    )


def fill(ts: int, oid: str, tid: str, price: int, qty: int, fee: int) -> OrderFilled:
    return OrderFilled(
        ts_recv=ts, order_id=oid, venue="V", trade_id=tid, price=price, qty=qty, fee=fee
    )


ENTRIES: list[tuple[Message, int | None]] = [
    (quote(1 * S, 9_998, 10_002), None),  # 0: V mid 10_000
    (quote(1 * S, 9_999, 10_003, venue="W"), None),  # 1: best bid 9_999, best ask 10_002
    (signal(2 * S, "s1", Side.BUY, 10, 9_995), None),  # 2
    (order(2 * S, "o1", "s1", Side.BUY, 10, price=10_002), 2),  # 3
    (OrderAccepted(ts_recv=2 * S + 1 * MS, order_id="o1", venue="V"), None),  # 4
    (fill(2 * S + 2 * MS, "o1", "t1", 10_001, 4, 8), None),  # 5
    (fill(2 * S + 2 * MS, "o1", "t1", 10_001, 4, 8), None),  # 6: repeated trade id
    (quote(2 * S + 500 * MS, 10_000, 10_004), None),  # 7: V mid 10_002
    (fill(2 * S + 600 * MS, "o1", "t2", 10_001, 6, 12), None),  # 8: o1 complete
    (signal(3 * S, "s2", Side.SELL, 5, 10_010), None),  # 9
    (order(3 * S, "o2", "s2", Side.SELL, 5), 9),  # 10
    (quote(3 * S + 100 * MS, 10_006, 10_010), None),  # 11: V mid 10_008
    (OrderRejected(ts_recv=3 * S + 200 * MS, order_id="o2", venue="V", reason="closed"), None),
    (signal(4 * S, "s3", Side.BUY, 8, 10_008), None),  # 13
    (order(4 * S, "o3", "s3", Side.BUY, 8, price=9_990), 13),  # 14
    (OrderAccepted(ts_recv=4 * S + 1 * MS, order_id="o3", venue="V"), None),  # 15
    (fill(4 * S + 5 * MS, "o3", "t3", 9_990, 3, 0), None),  # 16
    (fill(4 * S + 6 * MS, "o9", "t9", 1, 1, 1), None),  # 17: unknown order
    (
        Alert(
            ts_recv=4 * S + 6 * MS,
            severity=Severity.CRITICAL,
            code="UNKNOWN_ORDER",
            text="no such order",
            order_id="o9",
            venue="V",
        ),
        17,
    ),  # 18
    (quote(4 * S + 8 * MS, 10_010, 10_014), None),  # 19: V mid 10_012
    (OrderCanceled(ts_recv=4 * S + 9 * MS, order_id="o3", venue="V"), None),  # 20
    (signal(5 * S, "s4", Side.BUY, 2, 10_012), None),  # 21
    (order(5 * S, "o4", "s4", Side.BUY, 2, price=10_000), 21),  # 22: stays open
    (OrderAccepted(ts_recv=5 * S + 1 * MS, order_id="o4", venue="V"), None),  # 23
    (quote(6 * S, 10_020, 10_024), None),  # 24: the run's last V mid 10_022
]


def write_run(root: Path, run_id: str, entries: list[tuple[Message, int | None]]) -> Path:
    config = EngineConfig(run_id=run_id, instruments=(X,))
    with JournalWriter(root, new_manifest(config, mode="sim"), fsync="none") as journal:
        for msg, cause in entries:
            journal.append(msg, cause)
    return root / run_id


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("hand"), "hand", ENTRIES)


def row(run: Path, oid: str) -> dict[str, object]:
    orders = load_tca(run).orders
    return orders.filter(pl.col("order_id") == oid).row(0, named=True)


def test_load_tca_when_buy_fills_above_arrival_mid_then_known_bps_and_stages(hand: Path) -> None:
    o = row(hand, "o1")
    assert (o["status"], o["filled_qty"], o["n_fills"], o["fees"]) == ("FILLED", 10, 2, 20)
    assert o["vwap"] == 10_001.0
    assert (o["arrival_bid"], o["arrival_ask"], o["arrival_mid"]) == (9_998, 10_002, 10_000.0)
    assert (o["arrival_best_bid"], o["arrival_best_ask"]) == (9_999, 10_002)
    # one price unit above a 10_000 mid is exactly 1 bp, paid on a buy: +1
    assert o["slippage_arrival_bps"] == pytest.approx(1.0)
    assert o["slippage_signal_bps"] == pytest.approx(6 / 9_995 * 1e4)
    assert o["slippage_best_bps"] == pytest.approx(0.5 / 10_000.5 * 1e4)
    # fill 1 at mid 10_000 (+2 bps), fill 2 at mid 10_002 (-2/10_002), qty-weighted
    assert o["effective_spread_bps"] == pytest.approx((4 * 2.0 + 6 * -2 / 10_002 * 1e4) / 10)
    # shortfall vs the signal price 9_995: execution + fees, nothing left unfilled
    assert o["decision_price"] == 9_995.0
    assert o["is_execution_bps"] == pytest.approx(6 / 9_995 * 1e4)
    assert o["is_opportunity_bps"] == 0.0
    assert o["is_fees_bps"] == pytest.approx(20 / (9_995 * 10) * 1e4)
    assert o["shortfall_bps"] == pytest.approx((60 + 20) / (9_995 * 10) * 1e4)
    # 1 s after each fill: mid 10_002 (fill 1, at 3.002 s) and 10_008 (fill 2, at 3.6 s)
    mo = (4 * 1 / 10_001 + 6 * 7 / 10_001) * 1e4 / 10
    assert o["markout_1s_bps"] == pytest.approx(mo)
    assert o["markout_10s_bps"] is None  # the journal ends before
    assert o["ts_signal"] == 2 * S - 100 * MS
    assert (o["lat_signal_to_sent_ns"], o["lat_sent_to_ack_ns"]) == (100 * MS, 1 * MS)
    assert (o["lat_ack_to_first_fill_ns"], o["lat_first_fill_to_done_ns"]) == (1 * MS, 598 * MS)
    assert (o["time_to_fill_ns"], o["ts_done"]) == (2 * MS, 2 * S + 600 * MS)
    assert (o["touch_distance_ticks"], o["distance_bucket"]) == (-1, -1)  # crosses
    assert (o["size_bucket"], o["tod"], o["order_type"]) == (2, 0, "LIMIT")
    assert o["filled_notional"] == pytest.approx(100_010 / 100)


def test_load_tca_when_rejected_sell_then_opportunity_cost_at_end_mid(hand: Path) -> None:
    o = row(hand, "o2")
    assert (o["status"], o["reject_reason"], o["filled_qty"]) == ("REJECTED", "closed", 0)
    assert o["ts_done"] == 3 * S + 200 * MS and o["end_mid"] == 10_008.0
    # a sell decided at 10_010 that never sold while the mid fell to 10_008: a cost
    assert o["is_opportunity_bps"] == pytest.approx(2 / 10_010 * 1e4)
    assert o["shortfall_bps"] == pytest.approx(2 / 10_010 * 1e4)
    assert o["vwap"] is None and o["slippage_arrival_bps"] is None


def test_load_tca_when_partial_then_cancel_and_unknown_fill_then_canceled_partial(
    hand: Path,
) -> None:
    o = row(hand, "o3")
    assert (o["status"], o["filled_qty"], o["ts_done"]) == ("CANCELED", 3, 4 * S + 9 * MS)
    assert (o["touch_distance_ticks"], o["distance_bucket"]) == (16, 6)  # 9_990 vs bid 10_006
    assert o["is_opportunity_bps"] == pytest.approx(5 * (10_012 - 10_008) / (10_008 * 8) * 1e4)
    tca = load_tca(hand)
    assert "o9" not in tca.fills["order_id"].to_list()
    assert tca.fills.height == 3  # t1 once, t2, t3


def test_load_tca_when_order_still_open_then_accepted_and_marked_at_last_mid(hand: Path) -> None:
    o = row(hand, "o4")
    assert (o["status"], o["ts_done"], o["end_mid"]) == ("ACCEPTED", None, 10_022.0)
    assert o["is_opportunity_bps"] == pytest.approx((10_022 - 10_012) / 10_012 * 1e4)
    assert (o["touch_distance_ticks"], o["distance_bucket"]) == (10, 6)


def test_aggregate_when_by_venue_then_rates_and_weights(hand: Path) -> None:
    tca = load_tca(hand)
    (agg,) = aggregate(tca.orders, ["venue"]).iter_rows(named=True)
    assert (agg["venue"], agg["orders"], agg["orders_filled"], agg["fills"]) == ("V", 4, 2, 3)
    assert agg["fill_rate"] == 0.5
    assert (agg["reject_rate"], agg["cancel_rate"]) == (0.25, 0.25)
    assert agg["filled_share"] == pytest.approx((1 + 0 + 3 / 8 + 0) / 4)
    o = tca.orders.filter(pl.col("slippage_arrival_bps").is_not_null())
    w = o["filled_notional"]
    want = (o["slippage_arrival_bps"] * w).sum() / w.sum()
    assert agg["slippage_arrival_bps"] == pytest.approx(want)
    assert agg["sent_to_ack_p50_ns"] == 1 * MS
    assert tca.signal_rejects == 0 and tca.first_ts == 1 * S and tca.last_ts == 6 * S
    overall = aggregate(tca.orders)
    assert overall["orders"].to_list() == [4]


def test_aggregate_when_no_orders_then_empty(hand: Path) -> None:
    tca = load_tca(hand)
    assert aggregate(tca.orders.clear(), ["venue"]).height == 0
    assert aggregate(tca.orders.clear()).height == 0


def test_parse_by_when_unknown_or_repeated_field_then_error_names_it() -> None:
    assert parse_by("venue, instrument") == ["venue", "instrument"]
    with pytest.raises(TcaError, match=r"--by 'colour'.*expected fields among venue"):
        parse_by("venue,colour")
    with pytest.raises(TcaError, match="named twice"):
        parse_by(["venue", "venue"])
    assert set(BY_FIELDS) >= {"venue", "instrument", "strategy", "order_type", "size", "time"}


def test_venue_matrix_when_orders_span_days_then_windows_keep_only_recent(tmp_path: Path) -> None:
    day = 86_400 * S
    entries: list[tuple[Message, int | None]] = [(quote(1 * S, 9_998, 10_002), None)]
    for n, ts in enumerate((1 * S, 1 * S + 2 * day, 1 * S + 2 * day + 1_800 * S)):
        entries.append((signal(ts, f"s{n}", Side.BUY, 1, 10_000), None))
        entries.append((order(ts, f"o{n}", f"s{n}", Side.BUY, 1), len(entries) - 1))
    run = write_run(tmp_path, "days", entries)
    m = venue_matrix(load_tca(run).orders)
    orders = {r["window"]: r["orders"] for r in m.iter_rows(named=True)}
    assert orders == {"hour": 2, "day": 2, "week": 3}


def faulty_run(root: Path) -> tuple[Path, SimRun]:
    faults = FaultPlan(
        reject_rate=0.2, duplicate_fill_rate=0.3, drop_ack_rate=0.1, cancel_race_rate=0.5
    )
    venues = (
        VenueConfig(name="ALPHA", latency_ns=2 * MS, faults=faults, seed=1),
        VenueConfig(name="BETA", latency_ns=5 * MS, faults=faults, seed=2),
        VenueConfig(name="GAMMA", latency_ns=MS // 2, faults=faults, seed=3),
    )
    config = EngineConfig(
        run_id="faulty", seed=3, instruments=demo_instruments(), max_order_qty={"*": 100_000}
    )
    quotes = demo_market(3, 400)
    sim = SimRun(config, venues, root)
    sim.run(quotes, demo_signals(quotes, 3, every=10))
    return root / "faulty", sim


def test_load_tca_when_faulty_sim_run_then_status_and_fills_equal_the_engine(
    tmp_path: Path,
) -> None:
    run, sim = faulty_run(tmp_path)
    tca = load_tca(run)
    engine_orders = sim.engine.orders
    assert tca.orders.height == len(engine_orders)
    statuses = set()
    for o in tca.orders.iter_rows(named=True):
        mine = engine_orders[o["order_id"]]
        assert (o["status"], o["filled_qty"]) == (mine.status.value, mine.filled_qty)
        statuses.add(o["status"])
    assert {"FILLED", "REJECTED"} <= statuses
    assert tca.fills.height == sum(len(o.trade_ids) for o in engine_orders.values())


def test_load_tca_when_run_crashed_with_rotated_segments_then_same_as_closed(
    tmp_path: Path,
) -> None:
    closed = write_run(tmp_path / "a", "hand", ENTRIES)
    manifest = new_manifest(EngineConfig(run_id="hand", instruments=(X,)), mode="sim")
    with JournalWriter(tmp_path / "b", manifest, fsync="none", batch_size=4) as first:
        for msg, cause in ENTRIES[:12]:
            first.append(msg, cause)
    crashed = tmp_path / "b" / "hand"
    # a restart continues with the stored manifest
    writer = JournalWriter(tmp_path / "b", read_manifest(crashed), fsync="none", batch_size=4)
    for msg, cause in ENTRIES[12:]:
        writer.append(msg, cause)
    writer.flush()  # no close: the second segment stays an unsealed .arrows stream
    try:
        info = open_run(crashed)
        assert info.unsealed and len(info.sealed) == 1
        assert info.market[0] is not None  # the sealed segment's quotes are in market/
        assert load_tca(crashed).orders.equals(load_tca(closed).orders)
        assert scan_run(info).select(pl.len()).collect().item() == len(ENTRIES)
        seqs = scan_run(info).select("seq").collect().to_series().to_list()
        assert seqs == list(range(len(ENTRIES)))
    finally:
        writer.close()


def test_load_tca_when_many_sealed_segments_then_quotes_read_from_market_files(
    tmp_path: Path, hand: Path
) -> None:
    manifest = new_manifest(EngineConfig(run_id="hand", instruments=(X,)), mode="sim")
    with JournalWriter(tmp_path, manifest, fsync="none", batch_size=2, segment_bytes=1) as journal:
        for msg, cause in ENTRIES:
            journal.append(msg, cause)
    run = tmp_path / "hand"
    info = open_run(run)
    assert not info.unsealed and len(info.sealed) > 3
    assert len(info.market) == len(info.sealed)
    assert any(m is None for m in info.market) and any(m is not None for m in info.market)
    assert all(Path(m).parent.name == "market" for m in info.market if m is not None)
    tca, closed = load_tca(run), load_tca(hand)
    assert tca.orders.equals(closed.orders) and tca.fills.equals(closed.fills)
    frame = scan_run(info, ["seq", "kind", "bid_price", "order_id"]).collect()
    assert frame["seq"].to_list() == list(range(len(ENTRIES)))
    assert frame.filter(pl.col("kind") == "QuoteTick")["bid_price"].to_list() == [
        9_998,
        9_999,
        10_000,
        10_006,
        10_010,
        10_020,
    ]


def test_load_tca_when_quotes_journaled_with_a_cause_then_same_as_without(
    tmp_path: Path, hand: Path
) -> None:
    # an input with a cause is not market data: its rows go to the entries file, in the
    # same segment as the market-data file's quotes, and are put back in seq order
    entries = list(ENTRIES)
    for at in (7, 19):
        entries[at] = (entries[at][0], at - 1)
    run = write_run(tmp_path, "hand", entries)
    info = open_run(run)
    assert info.sealed and all(m is not None for m in info.market)
    quotes = _collect(info).tables["quotes"].cols["seq"].tolist()
    assert quotes == [0, 1, 7, 11, 19, 24]  # each kind's rows in seq order
    tca, closed = load_tca(run), load_tca(hand)
    assert tca.orders.equals(closed.orders) and tca.fills.equals(closed.fills)
    assert scan_run(info).select("seq").collect().to_series().to_list() == list(range(len(ENTRIES)))


def test_load_tca_when_market_file_still_open_then_segment_read_as_unsealed(
    tmp_path: Path, hand: Path
) -> None:
    # the writer seals a segment's market data first, then its entries; a segment with
    # either file still open is read through the journal reader, not as sealed
    shutil.copytree(hand, tmp_path / "hand")
    run = tmp_path / "hand"
    (run / "market" / "000000.arrow").rename(run / "market" / "000000.arrows")
    info = open_run(run)
    assert info.unsealed and info.sealed == () and info.market == ()
    tca, closed = load_tca(run), load_tca(hand)
    assert tca.orders.equals(closed.orders) and tca.fills.equals(closed.fills)
    assert scan_run(info).select(pl.len()).collect().item() == len(ENTRIES)


def test_find_runs_when_folder_glob_or_bad_path_then_runs_or_error(
    tmp_path: Path, hand: Path
) -> None:
    root = tmp_path / "journals"
    root.mkdir()
    shutil.copytree(hand, root / "r1")
    shutil.copytree(hand, root / "r2")
    (root / "notes").mkdir()
    assert find_runs([root]) == [root / "r1", root / "r2"]
    assert find_runs([str(root / "r*")]) == [root / "r1", root / "r2"]
    assert find_runs([root / "r1", str(root / "*")]) == [root / "r1", root / "r2"]
    with pytest.raises(TcaError, match="no such run directory"):
        find_runs([tmp_path / "missing"])
    with pytest.raises(TcaError, match="matches no run"):
        find_runs([str(tmp_path / "nothing*")])
    with pytest.raises(TcaError, match="folder without runs"):
        find_runs([root / "notes"])
    # both copies have run id "hand"
    with pytest.raises(TcaError, match="appears twice"):
        load_tca(root)


def test_attach_when_engine_and_other_ids_mixed_then_each_row_gets_its_order() -> None:
    orders = pl.DataFrame(
        {"order_id": ["r-1", "r-2", "x", "r-4"], "oix": [10, 11, 12, 13], "v": ["a", "b", "c", "d"]}
    )
    left = pl.DataFrame(
        {
            "seq": [1, 2, 3, 4, 5, 6],
            "order_id": ["r-2", "x", "r-9", "r-4", "r-02", "r-1"],
        }
    )
    got = _attach(left, orders, "r", ("oix", "v"))
    assert got["seq"].to_list() == [1, 2, 4, 6]
    assert got["oix"].to_list() == [11, 12, 13, 10]
    assert got["v"].to_list() == ["b", "c", "d", "a"]
