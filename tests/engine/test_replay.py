"""Runner and replay: journal-before-handle, write-ahead flush, bit-for-bit replay."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import EngineConfig
from engine.core import Engine
from engine.journal import JournalReader, JournalWriter
from engine.messages import (
    AssetClass,
    CancelRejected,
    Instrument,
    KillSwitch,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderType,
    QuoteTick,
    Resume,
    Side,
    Signal,
    SignalIntent,
    SubmitOrder,
    TimerFired,
    VenueDisconnected,
)
from engine.replay import replay
from engine.runner import LiveClock, Runner, new_manifest

INSTRUMENTS = (
    Instrument(
        instrument="BTC-USD",
        asset_class=AssetClass.CRYPTO,
        currency="USD",
        price_precision=2,
        size_precision=4,
        tick_size=5,
        lot_size=2,
        min_qty=2,
        venue_symbols={"V1": "BTC/USD", "V2": "BTCUSD"},
    ),
    Instrument(
        instrument="AAPL",
        asset_class=AssetClass.EQUITY,
        currency="USD",
        price_precision=2,
        size_precision=0,
        min_notional=100_00,
        venue_symbols={"V1": "AAPL"},
    ),
)
RUN_ID = "t"


def config(**kw: object) -> EngineConfig:
    return EngineConfig(run_id=RUN_ID, instruments=INSTRUMENTS, **kw)  # type: ignore[arg-type]


def record(tmp: Path, inputs: list[Message], cfg: EngineConfig | None = None, **jw: object) -> Path:
    cfg = cfg or config(max_order_qty={"*": 1_000})
    journal = JournalWriter(tmp, new_manifest(cfg, mode="test"), **jw)  # type: ignore[arg-type]
    runner = Runner(Engine(cfg), journal)
    for msg in inputs:
        runner.process(msg)
    runner.close()
    return journal.run_dir


# --- a strategy for random valid input sequences ----------------------------------------

_ts = st.integers(min_value=0, max_value=10**6)
_inst = st.sampled_from(["BTC-USD", "AAPL", "NOPE"])
_oid = st.integers(min_value=1, max_value=8).map(lambda n: f"{RUN_ID}-{n}")


@st.composite
def _input(draw: st.DrawFn) -> Message:
    kind = draw(st.integers(min_value=0, max_value=9))
    if kind <= 1:
        bid = draw(st.integers(min_value=100, max_value=20_000))
        return QuoteTick(
            ts_recv=0,
            instrument=draw(_inst),
            venue=draw(st.sampled_from(["V1", "V2"])),
            bid_price=bid,
            bid_size=draw(st.integers(1, 100)),
            ask_price=bid + draw(st.integers(0, 50)),
            ask_size=draw(st.integers(1, 100)),
        )
    if kind <= 4:
        intent = draw(st.sampled_from(list(SignalIntent)))
        otype = draw(st.sampled_from([OrderType.MARKET, OrderType.LIMIT]))
        return Signal(
            ts_recv=0,
            signal_id=f"s{draw(st.integers(0, 30))}",
            strategy=draw(st.sampled_from(["a", "b"])),
            account="ACC",
            instrument=draw(_inst),
            intent=intent,
            side=draw(st.sampled_from(list(Side))),
            qty=draw(st.integers(-5, 1_500)),
            target=draw(st.integers(-400, 400)) if intent is SignalIntent.TARGET else None,
            order_type=otype,
            price=draw(st.integers(1, 20_000)) if otype is OrderType.LIMIT else None,
            signal_price=draw(st.none() | st.integers(1, 20_000)),
            venue=draw(st.sampled_from([None, "V1", "V2"])),
        )
    venue = draw(st.sampled_from(["V1", "V2"]))
    oid = draw(_oid)
    if kind == 5:
        return OrderAccepted(ts_recv=0, order_id=oid, venue=venue)
    if kind == 6:
        return OrderFilled(
            ts_recv=0,
            order_id=oid,
            venue=venue,
            trade_id=f"x{draw(st.integers(0, 12))}",
            price=draw(st.integers(100, 20_000)),
            qty=draw(st.integers(1, 400)),
            fee=draw(st.integers(-5, 50)),
        )
    if kind == 7:
        return draw(
            st.sampled_from(
                [
                    OrderCanceled(ts_recv=0, order_id=oid, venue=venue),
                    OrderRejected(ts_recv=0, order_id=oid, venue=venue, reason="no"),
                    CancelRejected(ts_recv=0, order_id=oid, venue=venue, reason="late"),
                ]
            )
        )
    if kind == 8:
        return TimerFired(ts_recv=0, timer_id="x", purpose="ack_timeout", order_id=oid)
    return draw(
        st.sampled_from(
            [
                KillSwitch(ts_recv=0, operator="ops", reason="test"),
                Resume(ts_recv=0, operator="ops", reason="test"),
                VenueDisconnected(ts_recv=0, venue="V2", reason="drop"),
            ]
        )
    )


@st.composite
def sessions(draw: st.DrawFn) -> list[Message]:
    msgs = draw(st.lists(_input(), min_size=1, max_size=60))
    steps = draw(st.lists(_ts, min_size=len(msgs), max_size=len(msgs)))
    out, now = [], 1_000
    for msg, step in zip(msgs, steps, strict=True):
        now += step
        out.append(msgspec.structs.replace(msg, ts_recv=now))
    return out


@settings(max_examples=60)
@given(inputs=sessions(), batch=st.sampled_from([1, 3, 4096]))
def test_replay_when_random_valid_session_then_every_effect_identical(
    tmp_path_factory: object, inputs: list[Message], batch: int
) -> None:
    tmp = tmp_path_factory.mktemp("run")  # type: ignore[attr-defined]
    run_dir = record(tmp, inputs, batch_size=batch)
    result, _ = replay(run_dir)
    assert result.divergence is None, result.divergence.describe()
    assert result.inputs == len(inputs)


# --- runner -------------------------------------------------------------------------------


def signal(ts: int, sid: str = "s1", qty: int = 10, **kw: object) -> Signal:
    fields: dict[str, object] = {
        "ts_recv": ts,
        "signal_id": sid,
        "strategy": "a",
        "account": "ACC",
        "instrument": "BTC-USD",
        "side": Side.BUY,
        "qty": qty,
        "venue": "V1",
    }
    fields.update(kw)
    return Signal(**fields)  # type: ignore[arg-type]


def test_runner_when_input_has_effects_then_journals_input_then_effects_with_cause(
    tmp_path: Path,
) -> None:
    run_dir = record(tmp_path, [signal(5)])
    entries = list(JournalReader(run_dir).entries())
    assert [type(e.msg).__name__ for e in entries][:2] == ["Signal", "SubmitOrder"]
    assert [e.seq for e in entries] == list(range(len(entries)))
    assert entries[0].cause is None
    assert all(e.cause == 0 for e in entries[1:])
    assert all(e.msg.ts_recv == 5 for e in entries)


class _SpyJournal:
    """Wrap a real writer and log the order of appends, flushes and dispatches."""

    def __init__(self, inner: JournalWriter, log: list[str]) -> None:
        self.inner, self.log = inner, log

    def append(self, msg: Message, cause: int | None = None) -> int:
        self.log.append(f"append {type(msg).__name__}")
        return self.inner.append(msg, cause)

    def flush(self, durable: bool = False) -> None:
        self.log.append(f"flush durable={durable}")
        self.inner.flush(durable=durable)

    @property
    def next_seq(self) -> int:
        return self.inner.next_seq

    def close(self) -> None:
        self.inner.close()


def test_runner_when_write_ahead_then_durable_flush_before_any_dispatch(tmp_path: Path) -> None:
    cfg = config()
    log: list[str] = []
    journal = _SpyJournal(JournalWriter(tmp_path, new_manifest(cfg, mode="test")), log)
    runner = Runner(
        Engine(cfg),
        journal,  # type: ignore[arg-type]
        lambda m: log.append(f"dispatch {type(m).__name__}"),
        write_ahead=True,
    )
    runner.process(signal(5))
    runner.close()
    first_dispatch = next(i for i, line in enumerate(log) if line.startswith("dispatch"))
    assert log[:1] == ["append Signal"]
    assert "flush durable=True" in log[:first_dispatch]
    assert log.index("append SubmitOrder") < log.index("flush durable=True")


def test_runner_when_clock_given_then_stamps_ts_recv_monotonic(tmp_path: Path) -> None:
    readings = iter([50, 40])
    cfg = config()
    journal = JournalWriter(tmp_path, new_manifest(cfg, mode="test"))
    runner = Runner(Engine(cfg), journal, clock=lambda: next(readings))
    effects = runner.process(signal(0))
    assert effects and all(e.ts_recv == 50 for e in effects)
    runner.close()
    clock = LiveClock()
    assert clock() < clock() < clock()


# --- replay divergence and the CLI ---------------------------------------------------------


def _session() -> list[Message]:
    return [
        QuoteTick(
            ts_recv=1,
            instrument="BTC-USD",
            venue="V1",
            bid_price=100,
            bid_size=5,
            ask_price=105,
            ask_size=5,
        ),
        signal(2, "s1", qty=10),
        OrderAccepted(ts_recv=3, order_id=f"{RUN_ID}-1", venue="V1"),
        OrderFilled(ts_recv=4, order_id=f"{RUN_ID}-1", venue="V1", trade_id="x1", price=105, qty=4),
        signal(5, "s2", qty=600),
    ]


def test_replay_when_config_changed_then_names_first_divergent_seq(tmp_path: Path) -> None:
    run_dir = record(tmp_path, _session())
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["max_order_qty"] = {"*": 500}
    manifest_path.write_text(json.dumps(manifest))
    result, _ = replay(run_dir)
    div = result.divergence
    assert div is not None
    first_effect_of_s2 = next(
        e.seq
        for e in JournalReader(run_dir).entries()
        if e.cause is not None and isinstance(e.msg, SubmitOrder) and e.msg.signal_id == "s2"
    )
    assert div.seq == first_effect_of_s2
    assert isinstance(div.expected, SubmitOrder)
    assert type(div.actual).__name__ == "SignalRejected"
    assert f"seq {div.seq}" in div.describe()


def test_cli_replay_verify_when_identical_then_exit_0_one_line(
    tmp_path: Path, capsys: object
) -> None:
    from tape.cli import main

    run_dir = record(tmp_path, _session())
    assert main(["replay", str(run_dir), "--verify"]) == 0
    out = capsys.readouterr().out.strip().splitlines()  # type: ignore[attr-defined]
    assert len(out) == 1 and out[0].startswith("replay OK: run t:")


def test_cli_replay_verify_when_diverged_then_exit_1_names_seq(
    tmp_path: Path, capsys: object
) -> None:
    from tape.cli import main

    run_dir = record(tmp_path, _session())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["max_order_qty"] = {"*": 5}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert main(["replay", "t", "--verify", "--journals", str(tmp_path)]) == 1
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "replay DIVERGED" in out and "first divergence at seq" in out
    assert "expected SubmitOrder" in out and "got SignalRejected" in out


def test_cli_when_run_missing_then_exit_2_names_run(tmp_path: Path, capsys: object) -> None:
    from tape.cli import main

    assert main(["journal", "verify", "nope", "--journals", str(tmp_path)]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "RUN 'nope'" in err and "manifest.json" in err


def test_writer_when_restarted_with_a_fresh_manifest_then_accepted(tmp_path: Path) -> None:
    """A config with tuples (risk, venue rules) compares equal to its stored JSON form."""
    from engine.config import LifecycleConfig, RiskConfig, VenueRules

    risk = RiskConfig(
        lifecycle=LifecycleConfig(retryable_reasons=("busy",)),
        venues={"V1": VenueRules(do_not_trade=("AAPL",))},
    )
    cfg = config(risk=risk)
    first = JournalWriter(tmp_path, new_manifest(cfg, mode="test"))
    Runner(Engine(cfg), first).close()
    again = JournalWriter(tmp_path, new_manifest(cfg, mode="test"))  # refused before the fix
    again.close()
    assert replay(again.run_dir)[0].ok


def test_runner_process_row_when_quote_is_a_bulk_row_then_same_entries_as_process(
    tmp_path: Path,
) -> None:
    """A quote journaled as a row of bulk rows (the sim's path) is the same entry, with the
    same effects, as the quote journaled as a message; a clocked runner refuses it."""
    from engine.codec import columns_rows
    from engine.messages import KINDS

    quotes = [
        QuoteTick(
            ts_recv=ts,
            instrument="BTC-USD",
            venue="V1",
            bid_price=100 + ts,
            bid_size=5,
            ask_price=101 + ts,
            ask_size=5,
        )
        for ts in (1, 2, 3)
    ]
    rows = columns_rows(
        [KINDS.index(QuoteTick)] * 3,
        {
            name: [getattr(q, name) for q in quotes]
            for name in (
                "ts_recv",
                "instrument",
                "venue",
                "bid_price",
                "bid_size",
                "ask_price",
                "ask_size",
            )
        },
    )
    journaled = []
    for via_rows in (False, True):
        cfg = config(max_order_qty={"*": 1_000})
        journal = JournalWriter(
            tmp_path / str(via_rows), new_manifest(cfg, mode="test"), batch_size=3
        )
        runner = Runner(Engine(cfg), journal)
        for i, msg in enumerate(quotes):
            if i == 1:
                runner.process(signal(2))
            if via_rows:
                runner.process_row(msg, rows, i)
            else:
                runner.process(msg)
        runner.close()
        journaled.append(list(JournalReader(journal.run_dir).entries()))
    assert journaled[0] == journaled[1] and len(journaled[0]) > 4
    clocked = Runner(
        Engine(config()),
        JournalWriter(tmp_path / "c", new_manifest(config(), mode="test")),
        clock=lambda: 9,
    )
    with pytest.raises(RuntimeError, match="process_row: the runner stamps inputs"):
        clocked.process_row(quotes[0], rows, 0)
