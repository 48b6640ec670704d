"""Crash safety and restart, reviewed as for a live trading system.

A crash is simulated by copying the run directory at a chosen moment: the copy holds
exactly what reached the OS (a killed process loses what the writer still buffered), and
the lock file comes along without its flock. A restart is a `JournalWriter` reopening
the run and a `Runner` handed a fresh `Engine`, which the runner rebuilds from the
journal. When this review was written, 15 of these tests failed: the restarted engine
started empty (order ids reused, signals resent, fills booked on the wrong order), the
crash window between an input and its effects was not recovered, pending timers were
lost, the clock could step back, an unstorable value failed a whole batch, a failed
writer kept the run locked, a crash in the first manifest write blocked the run id, and
a sim run appended to an existing run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine import journal as journal_module
from engine.codec import CodecError
from engine.config import EngineConfig
from engine.core import Engine
from engine.journal import LOCK, MANIFEST, JournalError, JournalReader, JournalWriter, verify
from engine.messages import (
    Alert,
    AssetClass,
    Instrument,
    Message,
    OrderAccepted,
    OrderFilled,
    OrderStatus,
    QuoteTick,
    ScheduleTimer,
    Side,
    Signal,
    SignalRejected,
    SubmitOrder,
    TimerFired,
)
from engine.replay import replay
from engine.runner import LiveClock, Runner, new_manifest

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "t"
INSTRUMENT = Instrument(
    instrument="BTC-USD",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=2,
    size_precision=4,
    tick_size=5,
    lot_size=2,
    min_qty=2,
    venue_symbols={"V1": "BTC/USD", "V2": "BTCUSD"},
)
CONFIG = EngineConfig(run_id=RUN_ID, instruments=(INSTRUMENT,), max_order_qty={"*": 1_000})
ACK_NS = CONFIG.ack_timeout_ns


def quote(ts: int) -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        instrument="BTC-USD",
        venue="V1",
        bid_price=100,
        bid_size=50,
        ask_price=105,
        ask_size=50,
    )


def signal(ts: int, sid: str, qty: int = 10) -> Signal:
    return Signal(
        ts_recv=ts,
        signal_id=sid,
        strategy="a",
        account="ACC",
        instrument="BTC-USD",
        side=Side.BUY,
        qty=qty,
        venue="V1",
    )


def fill(ts: int, oid: str, trade: str, qty: int) -> OrderFilled:
    return OrderFilled(ts_recv=ts, order_id=oid, venue="V1", trade_id=trade, price=105, qty=qty)


# Before the crash: s1 sent as t-1, acknowledged and filled 4 of 10.
BEFORE = [
    quote(1),
    signal(2, "s1"),
    OrderAccepted(ts_recv=3, order_id="t-1", venue="V1"),
    fill(4, "t-1", "x1", 4),
]


class Live:
    """A runner on a journal, with the effects it dispatched."""

    def __init__(self, root: Path, *, batch_size: int = 1, **runner: object) -> None:
        self.sent: list[Message] = []
        self.engine = Engine(CONFIG)
        self.writer = JournalWriter(
            root, new_manifest(CONFIG, mode="test"), batch_size=batch_size, fsync="none"
        )
        self.runner = Runner(self.engine, self.writer, self.sent.append, **runner)  # type: ignore[arg-type]

    def feed(self, msgs: list[Message]) -> list[Message]:
        out: list[Message] = []
        for msg in msgs:
            out += self.runner.process(msg)
        return out

    def crash(self, into: Path) -> Path:
        """Copy the run as a crash now would leave it; return the copy's journal root."""
        shutil.copytree(self.writer.run_dir, into / RUN_ID)
        return into

    def close(self) -> None:
        self.runner.close()


def restart(root: Path, **runner: Any) -> Live:
    """Restart a crashed run the way the code offers: reopen the journal, new runner."""
    return Live(root, **runner)


def entries(root: Path) -> list[tuple[int, int | None, Message]]:
    return [(e.seq, e.cause, e.msg) for e in JournalReader(root / RUN_ID).entries()]


def submits(msgs: list[Message]) -> list[SubmitOrder]:
    return [m for m in msgs if isinstance(m, SubmitOrder)]


def state(engine: Engine) -> dict[str, object]:
    """What a restart must rebuild: orders, positions, working quantities, held signals."""
    return {
        "orders": [
            (o.order_id, o.signal_id, o.status, o.qty, o.filled_qty, o.fill_value, o.trade_ids)
            for o in engine.orders.values()
        ],
        "positions": [
            (key, p.qty, p.realised, p.fees) for key, p in engine.positions.strategy_positions()
        ],
        "working": [(k, engine.account_qty(*k)) for k in engine.account_instruments()],
        "held": engine.held_signals(),
    }


@pytest.fixture
def crashed(tmp_path: Path) -> Iterator[Path]:
    """The journal root of a run that crashed after BEFORE, every entry on disk."""
    live = Live(tmp_path / "live")
    live.feed(BEFORE)
    root = live.crash(tmp_path / "crash")
    live.close()
    yield root


# --- the journal across crashes and restarts: what works --------------------------------


def test_runner_restarts_when_crashed_twice_then_seq_chain_and_causes_are_whole(
    crashed: Path, tmp_path: Path
) -> None:
    """Two crashes in a row, one right after a restart (nothing written by it): the seq
    order and hash chain continue, every cause is its input's seq, `journal verify` is 0."""
    from tape.cli import main

    first = restart(crashed)
    assert first.writer.next_seq == 6
    root2 = first.crash(tmp_path / "crash2")  # right after the restart
    first.close()
    second = restart(root2)
    assert second.writer.next_seq == 6
    second.feed([quote(20), signal(21, "s9")])
    root3 = second.crash(tmp_path / "crash3")
    second.close()
    third = restart(root3)
    third.feed([quote(30)])
    third.close()
    got = entries(root3)
    assert [seq for seq, _, _ in got] == list(range(len(got)))
    inputs = {seq for seq, cause, _ in got if cause is None}
    for seq, cause, _ in got:
        assert cause is None or (cause in inputs and cause < seq)
    report = verify(root3 / RUN_ID)
    assert report.ok and report.chain_ok, report.problems
    assert report.entries == len(got) == 10  # s9's order: the ack watchdog is set already
    assert main(["journal", "verify", str(root3 / RUN_ID)]) == 0


def test_writer_restarts_when_seal_and_tail_both_interrupted_then_keeps_every_whole_batch(
    tmp_path: Path,
) -> None:
    """A crash during a background seal of a rotated segment, with the next segment torn,
    a seal copy and a manifest write half done: a restart keeps every whole batch, the
    chain verifies and seq goes on; a crash right after that restart changes nothing."""
    manifest = new_manifest(CONFIG, mode="test")
    live = JournalWriter(tmp_path / "live", manifest, batch_size=3, segment_bytes=16_000)
    appended = [quote(ts) for ts in range(60)]  # 6 groups of 3 a segment; 4 in the last
    for msg in appended:
        live.append(msg)
    live.flush()
    live._join_sealer()  # let the last rotation finish: the crash is staged by hand below
    crash = tmp_path / "crash"
    shutil.copytree(live.run_dir, crash / RUN_ID)
    live.close()
    run = crash / RUN_ID
    sealed = sorted(run.glob("*.arrow"))
    open_segment = run / "market" / next(run.glob("*.arrows")).name  # the quotes' file
    assert len(sealed) >= 2
    # The last sealed segment was still being sealed (both files): its stream, EOS and
    # part of the footer.
    for interrupted in (sealed[-1], run / "market" / sealed[-1].name):
        interrupted.with_suffix(".arrows").write_bytes(interrupted.read_bytes()[:-30])
        interrupted.unlink()
    # The open segment lost the end of its last market-data batch: its group is lost.
    data = open_segment.read_bytes()
    open_segment.write_bytes(data[:-11])
    (run / (sealed[-1].name + ".tmp")).write_bytes(b"half a copy")
    (run / (MANIFEST + ".tmp")).write_bytes(b'{"format_vers')
    survivors = JournalReader(run)
    kept = [e.msg for e in survivors.entries()]
    assert survivors.torn and kept == appended[: len(kept)] and len(kept) == 57
    assert survivors.verify().ok  # a crashed run's torn tail is no damage

    again = JournalWriter(crash, manifest, batch_size=3)
    assert again.next_seq == 57
    shutil.copytree(run, tmp_path / "crash2" / RUN_ID)  # crash right after the restart
    again.close()
    last = JournalWriter(tmp_path / "crash2", manifest, batch_size=3)
    assert last.next_seq == 57 and last.torn is None
    last.append(quote(99))
    last.close()
    reader = JournalReader(tmp_path / "crash2" / RUN_ID)
    assert [e.msg for e in reader.entries()] == [*kept, quote(99)]
    report = reader.verify()
    assert report.ok and report.chain_ok and report.entries == 58, report.problems
    assert not list((tmp_path / "crash2" / RUN_ID).glob("*.tmp"))


@pytest.mark.parametrize("dispatched", [True, False], ids=["after-dispatch", "before-dispatch"])
def test_runner_restart_when_effects_were_journaled_then_nothing_is_sent_again(
    crashed: Path, tmp_path: Path, dispatched: bool
) -> None:
    """SubmitOrder t-1 and its timer were journaled, then the crash came after or before
    the dispatch: a restart cannot know which, and must not send t-1 again (the venue
    may have it; reconciliation settles it)."""
    root = crashed if dispatched else crash_in_window(tmp_path / "window", 2)[0]
    assert [m.order_id for _, _, m in entries(root) if isinstance(m, SubmitOrder)] == ["t-1"]
    again = restart(root, write_ahead=True)
    again.feed([quote(10)])
    again.close()
    assert submits(again.sent) == []


# --- engine state after a restart: what a restarted runner gets wrong --------------------


def test_runner_restart_then_engine_state_equals_the_uncrashed_engine(crashed: Path) -> None:
    reference = Engine(CONFIG)
    for msg in BEFORE:
        reference.handle(msg)
    again = restart(crashed)
    assert state(again.engine) == state(reference)
    again.close()


def test_runner_restart_then_next_order_and_timer_ids_continue(crashed: Path) -> None:
    again = restart(crashed)
    effects = again.feed([signal(10, "s2")])
    again.close()
    sent_ids = [m.order_id for _, _, m in entries(crashed) if isinstance(m, SubmitOrder)]
    assert len(sent_ids) == len(set(sent_ids)), f"order ids sent twice: {sent_ids}"
    assert [m.order_id for m in submits(effects)] == ["t-2"]
    timers = [m.timer_id for _, _, m in entries(crashed) if isinstance(m, ScheduleTimer)]
    assert len(timers) == len(set(timers)), f"timer ids reused: {timers}"


def test_runner_restart_when_signal_redelivered_then_it_is_a_duplicate(crashed: Path) -> None:
    """The signal source re-delivers s1 after the restart (at-least-once delivery)."""
    again = restart(crashed)
    effects = again.feed([signal(10, "s1")])
    again.close()
    assert submits(effects) == []
    assert [type(m) for m in effects] == [SignalRejected]
    assert effects[0].code == "duplicate_signal"  # type: ignore[attr-defined]


def test_runner_restart_when_old_order_fills_then_booked_on_it_not_on_a_new_order(
    crashed: Path,
) -> None:
    """After the restart a new signal goes out, then t-1 (sent before the crash) fills."""
    again = restart(crashed)
    again.feed([signal(10, "s2"), fill(11, "t-1", "x2", 6)])
    engine = again.engine
    again.close()
    s1 = [o for o in engine.orders.values() if o.signal_id == "s1"]
    s2 = [o for o in engine.orders.values() if o.signal_id == "s2"]
    assert len(s2) == 1 and s2[0].filled_qty == 0, "t-1's fill was booked on s2's order"
    assert len(s1) == 1 and s1[0].status is OrderStatus.FILLED and s1[0].filled_qty == 10
    assert engine.positions.strategy_qty("ACC", "a", "BTC-USD") == 10


def test_replay_when_run_was_restarted_then_every_effect_identical(crashed: Path) -> None:
    again = restart(crashed)
    again.feed([signal(10, "s2"), fill(11, "t-1", "x2", 6)])
    again.close()
    assert verify(crashed / RUN_ID).ok
    result, _ = replay(crashed / RUN_ID)
    assert result.ok, result.divergence and result.divergence.describe()


# --- timers across a restart ---------------------------------------------------------------


@pytest.fixture
def unacked(tmp_path: Path) -> Iterator[Path]:
    """A run that crashed after sending s1 (t-1, its ack timeout armed), before any ack."""
    live = Live(tmp_path / "live")
    live.feed([quote(1), signal(2, "s1")])
    root = live.crash(tmp_path / "crash")
    live.close()
    yield root


def test_runner_restart_then_pending_timers_are_armed_again(unacked: Path) -> None:
    armed = [m for _, _, m in entries(unacked) if isinstance(m, ScheduleTimer)]
    assert [t.timer_id for t in armed] == ["t-t1"]
    again = restart(unacked)
    again.close()
    assert [m for m in again.sent if isinstance(m, ScheduleTimer)] == armed


def test_runner_restart_when_pre_crash_ack_timer_fires_then_it_alerts_on_its_order(
    unacked: Path,
) -> None:
    again = restart(unacked)
    fired = TimerFired(ts_recv=2 + ACK_NS, timer_id="t-t1", purpose="ack_timeout", order_id="t-1")
    effects = again.feed([fired])
    again.close()
    assert [m.code for m in effects if isinstance(m, Alert)] == ["ACK_TIMEOUT"]


# --- the crash window: an input journaled, its effects not (all, or some) ----------------


class CrashingJournal:
    """A writer that snapshots the run (a crash) right after journaling seq `at`."""

    def __init__(self, live: Live, at: int, into: Path) -> None:
        self.live, self.at, self.into = live, at, into
        self.sent_at_crash: list[Message] | None = None

    @property
    def run_dir(self) -> Path:
        return self.live.writer.run_dir

    @property
    def next_seq(self) -> int:
        return self.live.writer.next_seq

    def append(self, msg: Message, cause: int | None = None) -> int:
        seq = self.live.writer.append(msg, cause)
        if seq == self.at:
            # the crash comes once the group holding seq `at` reached the OS (under fsync
            # "none" a full group is written by a thread: wait for it, nothing more)
            self.live.writer.flush()
            shutil.copytree(self.live.writer.run_dir, self.into / RUN_ID)
            self.sent_at_crash = list(self.live.sent)
        return seq

    def flush(self, durable: bool = False) -> None:
        self.live.writer.flush(durable)

    def close(self) -> None:
        self.live.writer.close()


def crash_in_window(tmp_path: Path, effects_journaled: int) -> tuple[Path, list[Message]]:
    """Run quote, s1 with a crash after s1 (seq 1) and `effects_journaled` of its effects
    reached the journal; return the crash root and what had been dispatched by then."""
    live = Live(tmp_path / "live", write_ahead=True)
    crashing = CrashingJournal(live, 1 + effects_journaled, tmp_path / "crash")
    live.runner = Runner(live.engine, crashing, live.sent.append, write_ahead=True)  # type: ignore[arg-type]
    live.feed([quote(1), signal(2, "s1")])
    live.close()
    assert crashing.sent_at_crash is not None
    return tmp_path / "crash", crashing.sent_at_crash


@pytest.mark.parametrize("effects_journaled", [0, 1], ids=["input-only", "one-of-two-effects"])
def test_runner_restart_after_crash_window_then_effects_journaled_and_sent_once(
    tmp_path: Path, effects_journaled: int
) -> None:
    """Dispatch follows the journaling of all of an input's effects, so an input whose
    effects are incomplete on disk sent nothing: a restart must complete its effects in
    the journal (cause = its seq) and send them, once."""
    root, sent_before = crash_in_window(tmp_path, effects_journaled)
    assert submits(sent_before) == []  # the crash came before any dispatch
    on_disk = entries(root)
    assert [type(m).__name__ for _, _, m in on_disk][:2] == ["QuoteTick", "Signal"]
    assert len(on_disk) == 2 + effects_journaled
    again = restart(root, write_ahead=True)
    again.feed([quote(10)])
    again.close()
    journaled = [(cause, m) for _, cause, m in entries(root) if isinstance(m, SubmitOrder)]
    assert [(cause, m.order_id, m.signal_id) for cause, m in journaled] == [(1, "t-1", "s1")]
    assert [(m.order_id, m.signal_id) for m in submits(again.sent)] == [("t-1", "s1")]
    result, _ = replay(root / RUN_ID)
    assert result.ok, result.divergence and result.divergence.describe()


# --- the clock across a restart --------------------------------------------------------------


def test_runner_restart_with_live_clock_then_ts_recv_never_goes_backwards(tmp_path: Path) -> None:
    """Before the crash the wall clock ran a minute fast (corrected by NTP while down)."""
    ahead = time.time_ns() + 60 * 10**9  # clock-ok: the wall clock the run was stamped with
    live = Live(tmp_path / "live", clock=lambda: ahead)
    live.feed([quote(0)])
    root = live.crash(tmp_path / "crash")
    live.close()
    again = restart(root, clock=LiveClock())
    again.feed([quote(0), quote(0)])
    again.close()
    stamps = [m.ts_recv for _, cause, m in entries(root) if cause is None]
    assert stamps == sorted(stamps), stamps


# --- a value the journal cannot store ------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [{"bid_size": 2**63}, {"venue": "V1\ud800"}],
    ids=["int-out-of-int64", "str-lone-surrogate"],
)
def test_runner_when_input_value_cannot_be_stored_then_refused_and_nothing_else_lost(
    tmp_path: Path, bad: dict[str, object]
) -> None:
    """An adapter hands over a quote the journal cannot store (a size past int64, text
    that is not UTF-8). It must be refused before it gets a seq or reaches the engine (as
    other unencodable values are), not fail the writer at the next batch write and take
    with it the entries already handled in that batch (the ack and the fill of t-1)."""
    live = Live(tmp_path, batch_size=4096, write_ahead=True)
    live.feed(BEFORE)  # the ack and the fill wait in the batch (no venue command since)
    with pytest.raises(CodecError):
        live.runner.process(msgspec.structs.replace(quote(5), **bad))
    assert live.writer.next_seq == 6 and live.engine.last_quote("BTC-USD", "V1") == quote(1)
    live.feed([signal(6, "s2")])
    assert [m.order_id for m in submits(live.sent)] == ["t-1", "t-2"]
    live.close()
    kinds = [type(m).__name__ for _, _, m in entries(tmp_path)]
    assert kinds[2:8] == [
        "SubmitOrder", "ScheduleTimer", "OrderAccepted", "OrderFilled", "Signal", "SubmitOrder",
    ]  # fmt: skip


def test_writer_when_it_failed_then_a_new_writer_in_the_process_recovers_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk filled up while a batch was written: the writer fails, and "a writer
    reopening the run recovers it", but the failed one keeps its flock and its close
    refuses, so only the death of the process frees the run."""
    manifest = new_manifest(CONFIG, mode="test")
    writer = JournalWriter(tmp_path, manifest, batch_size=4)
    writer.append(quote(1))
    writer.flush()

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(journal_module, "assemble_split", disk_full)
        writer.append(quote(2))
        with pytest.raises(OSError):
            writer.flush()
    with contextlib.suppress(JournalError):  # saying it failed is fine; keeping the lock is not
        writer.close()
    again = JournalWriter(tmp_path, manifest, batch_size=4)  # the disk has room again
    assert again.next_seq == 1
    again.append(quote(3))
    again.close()
    assert verify(tmp_path / RUN_ID).ok


# --- starting a run: a crash during the first manifest write -------------------------------


def test_writer_when_crash_interrupted_the_first_manifest_then_restart_starts_the_run(
    tmp_path: Path,
) -> None:
    """The writer made the directory and its lock and was writing manifest.json.tmp: the
    run never started, and its restart must be able to start it."""
    run = tmp_path / RUN_ID
    run.mkdir()
    (run / LOCK).touch()
    (run / (MANIFEST + ".tmp")).write_bytes(b'{\n  "format_version": 1,\n  "run_')
    try:
        writer = JournalWriter(tmp_path, new_manifest(CONFIG, mode="test"))
    except JournalError as exc:
        pytest.fail(f"restart refused: {exc}")
    writer.append(quote(1))
    writer.close()
    assert verify(run).ok


def test_simrun_when_run_id_exists_then_refused_or_resumed_never_a_second_fresh_run(
    tmp_path: Path,
) -> None:
    """SimRun reopens an existing journal and appends a run from an empty engine: the
    journal then holds two runs that share order ids and does not replay."""
    import pyarrow as pa

    from sim.config import VenueConfig
    from sim.market import MARKET_SCHEMA
    from sim.run import SimRun

    row: dict[str, list[object]] = {name: [None] for name in MARKET_SCHEMA.names}
    row.update(
        ts=[1], mtype=[0], instrument=["BTC-USD"], venue=["V1"], bid_price=[100],
        bid_size=[50], ask_price=[105], ask_size=[50],
    )  # fmt: skip
    market = pa.Table.from_pydict(row, schema=MARKET_SCHEMA)
    venues = (VenueConfig(name="V1"), VenueConfig(name="V2"))
    SimRun(CONFIG, venues, tmp_path).run(market, [signal(2, "s1")])
    try:
        again = SimRun(CONFIG, venues, tmp_path)
    except (JournalError, ValueError):
        return  # refused: as good as resumed
    again.run(market, [signal(2, "s1")])
    result, _ = replay(tmp_path / RUN_ID)
    assert result.ok, result.divergence and result.divergence.describe()


# --- determinism -----------------------------------------------------------------------------

_SIM = """
import sys
from pathlib import Path
from tape.demo import run_demo
from engine.journal import read_manifest
result, _ = run_demo(Path(sys.argv[1]), "det", 7, 120)
print(read_manifest(result.run_dir).head_hash)
"""


def _demo_head(root: Path, hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", _SIM, str(root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def test_sim_when_string_hashing_differs_then_the_journal_is_bit_for_bit_the_same(
    tmp_path: Path,
) -> None:
    """Set or dict order from string hashes would show as a different hash chain head."""
    heads = {_demo_head(tmp_path / seed, seed) for seed in ("1", "2")}
    assert len(heads) == 1, heads
