"""The sim loop: fast-forward equals row-by-row, event order, callbacks, determinism,
stale-quote windows."""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import EngineConfig
from engine.journal import JournalReader
from engine.messages import (
    Alert,
    AssetClass,
    Instrument,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    OrderType,
    QuoteTick,
    ScheduleTimer,
    Side,
    Signal,
    SignalIntent,
    TimeInForce,
)
from engine.replay import replay
from sim.config import SimResult, VenueConfig
from sim.faults import FaultPlan
from sim.market import MARKET_SCHEMA, MTYPE_BOOK, MTYPE_QUOTE, MTYPE_TRADE, quote_table
from sim.run import SimRun

INSTRUMENTS = tuple(
    Instrument(
        instrument=name,
        asset_class=AssetClass.CRYPTO,
        currency="USD",
        price_precision=2,
        size_precision=2,
        venue_symbols={"A": name, "B": name},
    )
    for name in ("X", "Y")
)
VENUES = (VenueConfig(name="A", latency_ns=3), VenueConfig(name="B", latency_ns=7))
KEYS = [(i.instrument, v.name) for i in INSTRUMENTS for v in VENUES]


def market(
    seed: int,
    rows: int,
    kinds: tuple[int, ...] = (0, 0, 0, 0, 1, 2),
    keys: list[tuple[str, str]] = KEYS,
) -> pa.Table:
    """A random mixed market (quotes, trades, book levels) of `keys` around a walking mid."""
    rng = random.Random(seed)
    mid = {k: 1_000 for k in keys}
    cols: dict[str, list[object]] = {name: [] for name in MARKET_SCHEMA.names}
    ts = 1_000
    for _ in range(rows):
        ts += rng.choice((0, 0, 1, 2, 5))
        key = rng.choice(keys)
        mid[key] += rng.choice((-2, -1, 0, 1, 2))
        mtype = rng.choice(kinds)
        row: dict[str, object] = dict.fromkeys(MARKET_SCHEMA.names)
        row.update(ts=ts, mtype=mtype, instrument=key[0], venue=key[1], ts_event=ts - 1)
        if mtype == MTYPE_QUOTE:
            row.update(
                bid_price=mid[key] - 1,
                bid_size=rng.randint(1, 30),
                ask_price=mid[key] + 1,
                ask_size=rng.randint(1, 30),
            )
        elif mtype == MTYPE_TRADE:
            row.update(
                price=mid[key] + rng.choice((-1, 1)),
                qty=rng.randint(1, 20),
                side=rng.choice((0, 1, None)),
            )
        else:
            row.update(
                side=rng.choice((0, 1)),
                price=mid[key] + rng.randint(-5, 5),
                qty=rng.randint(0, 40),
                clear=rng.random() < 0.05,
            )
        for name, value in row.items():
            cols[name].append(value)
    return pa.table(cols, schema=MARKET_SCHEMA)


def signals(seed: int, table: pa.Table, every: int) -> list[Signal]:
    rng = random.Random(seed + 1)
    ts = table.column("ts").to_pylist()
    out: list[Signal] = []
    for n, i in enumerate(range(every, len(ts), every)):
        common = {
            "ts_recv": ts[i],
            "signal_id": f"s{n}",
            "strategy": rng.choice("pq"),
            "account": "ACC",
            "instrument": rng.choice("XY"),
            "venue": rng.choice("AB"),
        }
        roll = rng.random()
        if roll < 0.2 and out:
            target = out[-1]
            out.append(
                Signal(
                    **{**common, "strategy": target.strategy},  # type: ignore[arg-type]
                    intent=SignalIntent.CANCEL,
                    cancels=target.signal_id,
                )
            )
        elif roll < 0.6:
            out.append(
                Signal(
                    **common,
                    side=rng.choice(list(Side)),
                    qty=rng.randint(1, 50),  # type: ignore[arg-type]
                    order_type=OrderType.LIMIT,
                    price=1_000 + rng.randint(-4, 4),
                    tif=rng.choice([TimeInForce.GTC, TimeInForce.IOC]),
                )
            )
        else:
            out.append(Signal(**common, side=rng.choice(list(Side)), qty=rng.randint(1, 50)))  # type: ignore[arg-type]
    return out


def run(
    tmp: Path, table: pa.Table, sigs: list[Signal], chunk: int = 64, **kw: object
) -> tuple[Path, SimRun]:
    config = EngineConfig(run_id="r", instruments=INSTRUMENTS)
    sim = SimRun(config, VENUES, tmp, **kw)  # type: ignore[arg-type]
    result = sim.run(table.to_batches(max_chunksize=chunk), sigs)
    return Path(result.run_dir), sim


def entries(run_dir: Path) -> list[tuple[int | None, object]]:
    return [(e.cause, e.msg) for e in JournalReader(run_dir).entries()]


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), every=st.sampled_from([3, 10, 40]))
def test_run_when_fast_forwarded_then_same_entries_as_row_by_row(
    tmp_path_factory: pytest.TempPathFactory, seed: int, every: int
) -> None:
    table = market(seed, 400)
    sigs = signals(seed, table, every)
    fast, _ = run(tmp_path_factory.mktemp("fast"), table, sigs)
    slow, _ = run(tmp_path_factory.mktemp("slow"), table, sigs, fast=False)
    assert entries(fast) == entries(slow)
    result, _ = replay(fast)
    assert result.ok, result.divergence and result.divergence.describe()


def test_run_when_equal_times_then_market_before_signal(tmp_path: Path) -> None:
    table = market(1, 20, kinds=(0,))
    t5 = table.column("ts")[5].as_py()
    sig = Signal(
        ts_recv=t5,
        signal_id="s",
        strategy="p",
        account="ACC",
        instrument="X",
        side=Side.BUY,
        qty=5,
        venue="A",
    )
    run_dir, _ = run(tmp_path, table, [sig])
    got = entries(run_dir)
    at = next(i for i, (_, m) in enumerate(got) if isinstance(m, Signal))
    same_time = [m for _, m in got if isinstance(m, QuoteTick) and m.ts_recv == t5]
    assert same_time and all(got.index((None, q)) < at for q in same_time)
    later = [i for i, (_, m) in enumerate(got) if isinstance(m, QuoteTick) and m.ts_recv > t5]
    assert all(i > at for i in later)


def test_run_when_venue_not_simulated_then_order_rejected_not_lost(tmp_path: Path) -> None:
    inst = Instrument(
        instrument="Z",
        asset_class=AssetClass.FX,
        currency="USD",
        price_precision=4,
        size_precision=0,
        venue_symbols={"GONE": "Z"},
    )
    config = EngineConfig(run_id="r", instruments=(inst,))
    sim = SimRun(config, VENUES, tmp_path)
    sig = Signal(
        ts_recv=5, signal_id="s", strategy="p", account="ACC", instrument="Z", side=Side.BUY, qty=1
    )
    result = sim.run(MARKET_SCHEMA.empty_table(), [sig])
    rejected = [m for _, m in entries(Path(result.run_dir)) if isinstance(m, OrderRejected)]
    assert [r.reason for r in rejected] == ["venue GONE is not simulated in this run"]


class EveryTenth:
    """Buy at the bid on every 10th quote; cancel the previous order first."""

    def __init__(self) -> None:
        self.seen = 0
        self.n = 0

    def on_quote(
        self, ts: int, key: int, bid: int, bid_size: int, ask: int, ask_size: int
    ) -> list[Signal] | None:
        self.seen += 1
        if self.seen % 10:
            return None
        self.n += 1
        out = []
        if self.n > 1:
            out.append(
                Signal(
                    ts_recv=ts,
                    signal_id=f"c{self.n}",
                    strategy="p",
                    account="ACC",
                    instrument=KEYS[key][0],
                    intent=SignalIntent.CANCEL,
                    cancels=f"s{self.n - 1}",
                )
            )
        out.append(
            Signal(
                ts_recv=ts,
                signal_id=f"s{self.n}",
                strategy="p",
                account="ACC",
                instrument=KEYS[key][0],
                venue=KEYS[key][1],
                side=Side.BUY,
                qty=3,
                order_type=OrderType.LIMIT,
                price=bid,
            )
        )
        return out


def test_run_when_tick_strategy_then_sees_every_quote_and_same_as_row_by_row(
    tmp_path: Path,
) -> None:
    table = market(3, 500)
    quotes = int(np.sum(table.column("mtype").to_numpy() == MTYPE_QUOTE))
    fast_strategy, slow_strategy = EveryTenth(), EveryTenth()
    fast, sim = run(tmp_path / "f", table, [], strategy=fast_strategy)
    slow, _ = run(tmp_path / "s", table, [], strategy=slow_strategy, fast=False)
    assert fast_strategy.seen == slow_strategy.seen == quotes
    assert entries(fast) == entries(slow)
    assert sim.signals == fast_strategy.n + fast_strategy.n - 1


def test_run_when_same_inputs_then_byte_identical_segments(tmp_path: Path) -> None:
    table = market(9, 300)
    sigs = signals(9, table, 7)
    a, _ = run(tmp_path / "a", table, sigs)
    b, _ = run(tmp_path / "b", table, sigs)
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*.arrow"))
    assert "market/000000.arrow" in names
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*.arrow"))
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_run_when_batch_has_wrong_schema_then_clear_error(tmp_path: Path) -> None:
    config = EngineConfig(run_id="r", instruments=INSTRUMENTS)
    sim = SimRun(config, VENUES, tmp_path)
    bad = pa.table({"ts": [1], "price": [2]})
    with pytest.raises(ValueError, match=r"schema differs from sim\.market\.MARKET_SCHEMA"):
        sim.run(bad, [])


def test_market_book_rows_reach_engine_book(tmp_path: Path) -> None:
    table = market(4, 300, kinds=(MTYPE_BOOK,))
    _, fast_sim = run(tmp_path / "f", table, [])
    _, slow_sim = run(tmp_path / "s", table, [], fast=False)
    for inst, venue in KEYS:
        fb, sb = fast_sim.engine.book(inst, venue), slow_sim.engine.book(inst, venue)
        assert (fb is None) == (sb is None)
        if fb is not None and sb is not None:
            assert list(fb.levels(Side.BUY)) == list(sb.levels(Side.BUY))
            assert list(fb.levels(Side.SELL)) == list(sb.levels(Side.SELL))


# --- stale quotes -----------------------------------------------------------------------------


def stale_venues(start: int, end: int) -> tuple[VenueConfig, ...]:
    """VENUES with a stale-quote window [start, end) on venue A."""
    return (
        VenueConfig(name="A", latency_ns=3, faults=FaultPlan(stale_quotes=((start, end),))),
        VENUES[1],
    )


def run_stale(
    tmp: Path, table: pa.Table, sigs: list[Signal], venues: tuple[VenueConfig, ...], **kw: object
) -> tuple[Path, SimRun, SimResult]:
    config = EngineConfig(run_id="r", instruments=INSTRUMENTS)
    sim = SimRun(config, venues, tmp, **kw)  # type: ignore[arg-type]
    result = sim.run(table.to_batches(max_chunksize=64), sigs)
    return Path(result.run_dir), sim, result


def test_run_when_stale_quote_window_then_engine_and_journal_get_none_of_its_rows(
    tmp_path: Path,
) -> None:
    table = market(5, 300, kinds=(MTYPE_QUOTE,))
    ts = table.column("ts").to_pylist()
    venue = table.column("venue").to_pylist()
    start, end = ts[150], ts[-1] + 1  # to the end: the engine's last A quote is older
    run_dir, sim, result = run_stale(tmp_path, table, [], stale_venues(start, end))
    stale = [i for i in range(len(ts)) if venue[i] == "A" and start <= ts[i] < end]
    assert stale and result.withheld == len(stale)
    journaled = [m for _, m in entries(run_dir) if isinstance(m, QuoteTick)]
    assert len(journaled) == len(ts) - len(stale) == result.inputs
    assert not [q for q in journaled if q.venue == "A" and q.ts_recv >= start]
    for inst in ("X", "Y"):
        before = [q for q in journaled if q.venue == "A" and q.instrument == inst]
        assert sim.engine.last_quote(inst, "A") == before[-1]
        after = [q for q in journaled if q.venue == "B" and q.instrument == inst]
        assert sim.engine.last_quote(inst, "B") == after[-1]
    replayed, _ = replay(run_dir)
    assert replayed.ok, replayed.divergence and replayed.divergence.describe()


def test_run_when_market_crosses_inside_stale_window_then_venue_fills_unseen_by_engine(
    tmp_path: Path,
) -> None:
    n = 12
    ts = np.arange(1_000, 1_000 + 10 * n, 10, dtype=np.int64)
    ask = np.full(n, 1_002, dtype=np.int64)
    ask[6] = 1_000  # at 1_060, inside the window: the ask reaches our bid
    sizes = np.full(n, 10, dtype=np.int64)
    table = quote_table(ts, "X", "A", np.full(n, 998, dtype=np.int64), sizes, ask, sizes)
    buy = Signal(
        ts_recv=1_020,
        signal_id="s",
        strategy="p",
        account="ACC",
        instrument="X",
        venue="A",
        side=Side.BUY,
        qty=5,
        order_type=OrderType.LIMIT,
        price=1_000,
    )
    run_dir, _, result = run_stale(tmp_path, table, [buy], stale_venues(1_045, 1_075))
    got = [m for _, m in entries(run_dir)]
    fills = [m for m in got if isinstance(m, OrderFilled)]
    assert [(f.qty, f.price, f.ts_event) for f in fills] == [(5, 1_000, 1_060)]
    quotes = [m.ts_recv for m in got if isinstance(m, QuoteTick)]
    assert result.withheld == 3 and quotes == [t for t in ts.tolist() if not 1_045 <= t < 1_075]
    assert all(m.ask_price == 1_002 for m in got if isinstance(m, QuoteTick))


@settings(max_examples=8)
@given(
    seed=st.integers(0, 2**32 - 1),
    every=st.sampled_from([3, 10]),
    window=st.tuples(st.integers(0, 399), st.integers(1, 200)),
)
def test_run_when_stale_windows_then_fast_forward_same_entries_as_row_by_row(
    tmp_path_factory: pytest.TempPathFactory, seed: int, every: int, window: tuple[int, int]
) -> None:
    table = market(seed, 400)
    sigs = signals(seed, table, every)
    ts = table.column("ts").to_pylist()
    start = ts[window[0]]
    venues = stale_venues(start, start + window[1])
    fast, _, fast_result = run_stale(tmp_path_factory.mktemp("fast"), table, sigs, venues)
    slow, _, slow_result = run_stale(
        tmp_path_factory.mktemp("slow"), table, sigs, venues, fast=False
    )
    assert entries(fast) == entries(slow)
    assert fast_result.withheld == slow_result.withheld
    result, _ = replay(fast)
    assert result.ok, result.divergence and result.divergence.describe()


def test_run_when_stale_window_then_tick_strategy_sees_only_quotes_the_engine_gets(
    tmp_path: Path,
) -> None:
    table = market(3, 500)
    ts = table.column("ts").to_pylist()
    start, end = ts[100], ts[300]
    strategy = EveryTenth()
    run_dir, _, result = run_stale(tmp_path, table, [], stale_venues(start, end), strategy=strategy)
    mtype = table.column("mtype").to_pylist()
    venue = table.column("venue").to_pylist()
    stale = [venue[i] == "A" and start <= ts[i] < end for i in range(len(ts))]
    shown = [i for i in range(len(ts)) if mtype[i] == MTYPE_QUOTE and not stale[i]]
    assert strategy.seen == len(shown) and result.withheld > 0
    journaled = [m for _, m in entries(run_dir) if isinstance(m, QuoteTick)]
    assert len(journaled) == len(shown)


def test_run_when_market_batches_are_large_then_each_ends_a_journal_group(tmp_path: Path) -> None:
    """A market batch that brings the pending group to SIM_GROUP_END entries ends it, so a
    group's market rows are slices of one input batch (joined without a copy); smaller
    batches share a group."""
    from sim.run import SIM_GROUP_END

    sizes = [SIM_GROUP_END + 5, 1_000, SIM_GROUP_END, 7]
    n = sum(sizes)
    mid = 1_000 + np.arange(n) % 3
    table = quote_table(
        1_000 + np.arange(n, dtype=np.int64),
        "X",
        "A",
        mid - 1,
        np.full(n, 5),
        mid + 1,
        np.full(n, 5),
    )
    bounds = np.cumsum([0, *sizes]).tolist()
    batches = [table.slice(a, b - a).to_batches()[0] for a, b in pairwise(bounds)]
    config = EngineConfig(run_id="r", instruments=INSTRUMENTS)
    result = SimRun(config, VENUES, tmp_path).run(batches, [])
    sealed = pa.ipc.open_file(Path(result.run_dir) / "market" / "000000.arrow")
    rows = [sealed.get_batch(i).num_rows for i in range(sealed.num_record_batches)]
    assert rows == [sizes[0], sizes[1] + sizes[2], sizes[3]]
    assert JournalReader(Path(result.run_dir)).verify().ok


@settings(max_examples=200)
@given(
    values=st.lists(st.sampled_from(["X", "Y", "XY", "", "é"]), min_size=1, max_size=12),
    cut=st.integers(0, 5),
)
def test_encode_when_column_is_any_string_column_then_codes_give_back_its_values(
    values: list[str], cut: int
) -> None:
    """`_encode` (with its one-value fast path read off the buffers, sliced columns
    included) gives each row's value back through the codes."""
    from sim.run import _encode

    column = pa.array(["pad"] * cut + values, pa.string()).slice(cut)
    names, codes = _encode(column)
    if codes is None:  # the one-value fast path
        assert names == [values[0]] and set(values) == {values[0]}
        return
    assert [names[c] for c in codes.tolist()] == values
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    "pairs",
    [
        [("X", "A")] * 3,  # one instrument, one venue: the fast path
        [("X", "A"), ("X", "B"), ("X", "B")],  # one instrument
        [("Y", "B"), ("X", "B"), ("Y", "B")],  # one venue
        [("Y", "B"), ("X", "A"), ("X", "B"), ("Y", "A")],
    ],
)
def test_key_array_when_columns_hold_one_value_or_many_then_each_rows_key(
    tmp_path: Path, pairs: list[tuple[str, str]]
) -> None:
    sim = SimRun(EngineConfig(run_id="r", instruments=INSTRUMENTS), VENUES, tmp_path)
    batch = pa.record_batch(
        [pa.array([i for i, _ in pairs]), pa.array([v for _, v in pairs])],
        names=["instrument", "venue"],
    )
    keys, single = sim._key_array(batch)
    assert keys.dtype == np.int32
    assert [sim.keys[k] for k in keys.tolist()] == pairs
    assert single == (int(keys[0]) if len(set(pairs)) == 1 else -1)


# --- batches of one key (the venue's slice fast paths), from a review ----------------------


def limit_signals(seed: int, table: pa.Table, key: tuple[str, str]) -> list[Signal]:
    rng = random.Random(seed + 1)
    ts = table.column("ts").to_pylist()
    return [
        Signal(
            ts_recv=ts[i],
            signal_id=f"s{n}",
            strategy="p",
            account="ACC",
            instrument=key[0],
            venue=key[1],
            side=rng.choice(list(Side)),
            qty=rng.randint(1, 50),
            order_type=OrderType.LIMIT,
            price=1_000 + rng.randint(-4, 4),
            tif=TimeInForce.GTC,
        )
        for n, i in enumerate(range(3, len(ts), 9))
    ]


def verified_entries(
    tmp: Path, table: pa.Table, sigs: list[Signal], chunk: int, fast: bool
) -> list[tuple[int | None, object]]:
    run_dir, _ = run(tmp, table, sigs, chunk, fast=fast)
    assert JournalReader(run_dir).verify().ok
    return entries(run_dir)


@pytest.mark.parametrize(
    ("seed", "kinds", "chunk"),
    [
        (1, (0,), 13),  # quotes only: the quotes_only fast paths
        (2, (0, 0, 0, 1), 11),  # quotes and trades, L1
        (3, (0, 0, 0, 0, 1, 2), 7),  # with book rows: L2 keys, some quotes-only batches
        (4, (0, 2), 5),
    ],
)
def test_run_when_every_batch_has_one_key_then_fast_forward_equals_row_by_row(
    tmp_path: Path, seed: int, kinds: tuple[int, ...], chunk: int
) -> None:
    """Batches of one key take the slice fast paths (horizon and skip with `KeyRows`
    slices, quotes-only shortcuts, shared all-null view columns): a fast run journals
    exactly what a row-by-row run does."""
    key = ("X", "A") if seed % 2 else ("Y", "B")
    table = market(seed, 400, kinds, [key])
    sigs = limit_signals(seed, table, key)
    fast = verified_entries(tmp_path / "fast", table, sigs, chunk, True)
    slow = verified_entries(tmp_path / "slow", table, sigs, chunk, False)
    assert fast == slow
    assert any(type(m).__name__ == "OrderFilled" for _, m in fast) or seed == 4


def test_run_when_events_land_on_row_timestamps_then_same_order_as_row_by_row(
    tmp_path: Path,
) -> None:
    """Signals and venue responses at exactly a row's ts and before it (the loop's
    no-search branch, `_step_event(best)`): the fast run orders them as the slow one."""
    table = market(9, 300, (0, 0, 1), [("X", "A")])
    ts = table.column("ts").to_pylist()
    sigs = [
        Signal(
            ts_recv=ts[i] - (i % 2),  # at a row's ts, or just before it
            signal_id=f"e{i}",
            strategy="p",
            account="ACC",
            instrument="X",
            venue="A",
            side=Side.BUY if i % 4 else Side.SELL,
            qty=5,
            order_type=OrderType.LIMIT,
            price=1_000 + (i % 5) - 2,
            tif=TimeInForce.GTC,
        )
        for i in range(2, 300, 7)
    ]
    fast = verified_entries(tmp_path / "fast", table, sigs, 17, True)
    slow = verified_entries(tmp_path / "slow", table, sigs, 17, False)
    assert fast == slow


def test_run_when_venue_drops_every_ack_then_each_order_alerted_at_its_deadline(
    tmp_path: Path,
) -> None:
    """Acks the venue drops are caught by the engine's one ack watchdog: an ACK_TIMEOUT
    for each order at its own deadline (sent + ack_timeout), through one timer re-set
    from deadline to deadline, and the run replays identically."""
    timeout = 1_000
    venues = (VenueConfig(name="A", latency_ns=3, faults=FaultPlan(drop_ack_rate=1.0)),)
    config = EngineConfig(run_id="r", instruments=INSTRUMENTS, ack_timeout_ns=timeout)
    ts = np.arange(0, 5_000, 10, dtype=np.int64)
    ones = np.ones(len(ts), dtype=np.int64)
    table = quote_table(ts, "X", "A", 990 * ones, 5 * ones, 1_010 * ones, 5 * ones)
    sent_at = [100, 250, 400, 3_000]
    sigs = [
        Signal(
            ts_recv=ts,
            signal_id=f"s{n}",
            strategy="p",
            account="ACC",
            instrument="X",
            venue="A",
            side=Side.BUY,
            qty=1,
            order_type=OrderType.LIMIT,
            price=900,  # never fills: only the ack could end the wait
        )
        for n, ts in enumerate(sent_at)
    ]
    result = SimRun(config, venues, tmp_path).run(table.to_batches(max_chunksize=64), sigs)
    got = [m for _, m in entries(Path(result.run_dir))]
    alerts = [m for m in got if isinstance(m, Alert) and m.code == "ACK_TIMEOUT"]
    assert [(a.ts_recv, a.order_id) for a in alerts] == [
        (ts + timeout, f"r-{n}") for n, ts in enumerate(sent_at, 1)
    ]
    timers = [m for m in got if isinstance(m, ScheduleTimer) and m.purpose == "ack_timeout"]
    # one timer at a time: set by the first order, re-set when it fires for the next
    # deadline, set again by the order sent after none was waiting
    assert [(t.ts_recv, t.fire_at) for t in timers] == [
        (100, 1_100),
        (1_100, 1_250),
        (1_250, 1_400),
        (3_000, 4_000),
    ]
    assert not any(isinstance(m, OrderAccepted) for m in got)
    replayed, _ = replay(Path(result.run_dir), verify=True)
    assert replayed.divergence is None
