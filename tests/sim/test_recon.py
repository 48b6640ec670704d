"""Reconnect reconciliation and retries against the simulated venue's fault plan."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pyarrow as pa

from engine.config import EngineConfig, LifecycleConfig, RiskConfig
from engine.journal import JournalReader
from engine.messages import (
    Alert,
    AssetClass,
    Instrument,
    OrderType,
    PositionAdjusted,
    RequestReports,
    Side,
    Signal,
    SubmitOrder,
)
from engine.replay import replay
from sim.config import VenueConfig
from sim.faults import FaultPlan, RejectReason
from sim.market import MARKET_SCHEMA, MTYPE_QUOTE
from sim.run import SimRun

X = Instrument(
    instrument="X",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=2,
    size_precision=0,
    venue_symbols={"A": "X"},
)
MS = 1_000_000
T0 = 1_000 * MS


def quotes(rows: int) -> pa.Table:
    """Quotes every ms whose mid swings 10 ticks each way every 200 ms: resting orders fill."""
    cols: dict[str, list[object]] = {name: [] for name in MARKET_SCHEMA.names}
    for i in range(rows):
        phase = i % 200
        mid = 10_000 + (phase - 50 if phase < 100 else 150 - phase) // 5
        row: dict[str, object] = dict.fromkeys(MARKET_SCHEMA.names)
        row.update(
            ts=T0 + i * MS,
            mtype=MTYPE_QUOTE,
            instrument="X",
            venue="A",
            bid_price=mid - 1,
            bid_size=50,
            ask_price=mid + 1,
            ask_size=50,
        )
        for name, value in row.items():
            cols[name].append(value)
    return pa.table(cols, schema=MARKET_SCHEMA)


def limit_orders(seed: int, n: int, every_ms: int) -> list[Signal]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        side = rng.choice(list(Side))
        out.append(
            Signal(
                ts_recv=T0 + (k + 1) * every_ms * MS,
                signal_id=f"s{k}",
                strategy=rng.choice(("p", "q")),
                account="ACC",
                instrument="X",
                side=side,
                qty=rng.randint(1, 5),
                order_type=OrderType.LIMIT,
                price=10_000 + (-3 if side is Side.BUY else 3),
            )
        )
    return out


def run(tmp: Path, faults: FaultPlan, sigs: list[Signal], risk: RiskConfig | None = None) -> SimRun:
    config = EngineConfig(run_id="rc", instruments=(X,), risk=risk or RiskConfig())
    venue = VenueConfig(name="A", latency_ns=2 * MS, faults=faults, seed=3)
    sim = SimRun(config, (venue,), tmp)
    sim.run(quotes(3_000), sigs)
    return sim


def effects(run_dir: Path) -> list[object]:
    return [e.msg for e in JournalReader(run_dir).entries() if e.cause is not None]


def test_reconnect_when_fills_lost_in_disconnect_then_recovered_from_reports(
    tmp_path: Path,
) -> None:
    faults = FaultPlan(disconnects=((T0 + 800 * MS, T0 + 1_600 * MS),), lose_held=True)
    sim = run(tmp_path, faults, limit_orders(5, 120, 20))
    venue = sim.venues["A"]
    engine = sim.engine
    out = effects(sim.journal.run_dir)
    assert sum(isinstance(e, RequestReports) for e in out) == 1
    recovered = [e for e in out if isinstance(e, PositionAdjusted)]
    assert recovered and {e.code for e in recovered} == {"RECOVERED_FILL"}
    codes = Counter(e.code for e in out if isinstance(e, Alert))
    assert codes["RECONCILED"] == 1
    assert codes["RECON_MISMATCH"] == 0
    # After reconciliation the engine holds exactly what the venue holds.
    assert engine.venue_position("A", "ACC", "X") == venue.ledger.position("ACC", "X")
    net = engine.positions.net_position("ACC", "X")
    assert net is not None and net.qty == venue.ledger.position("ACC", "X")
    # Signals during the window were denied, not queued at a dead venue.
    rejected = [e for e in out if type(e).__name__ == "SignalRejected"]
    assert {e.code for e in rejected} <= {"venue_disconnected", "venue_reconciling"}  # type: ignore[attr-defined]
    result, _ = replay(sim.journal.run_dir)
    assert result.ok


def test_retry_when_retryable_rejects_then_resent_without_duplicates(tmp_path: Path) -> None:
    faults = FaultPlan(
        reject_rate=0.3,
        reject_reasons=(
            RejectReason(reason="rate limit exceeded", retryable=True, weight=3),
            RejectReason(reason="insufficient margin", retryable=False, weight=1),
        ),
    )
    risk = RiskConfig(lifecycle=LifecycleConfig(max_retries=2, retry_backoff_ns=5 * MS))
    sim = run(tmp_path, faults, limit_orders(9, 100, 25), risk)
    out = effects(sim.journal.run_dir)
    sent = [e for e in out if isinstance(e, SubmitOrder)]
    per_signal = Counter(e.signal_id for e in sent)
    retried = [sid for sid, n in per_signal.items() if n > 1]
    assert retried, "the fault plan should force some retries"
    alerts = [e for e in out if isinstance(e, Alert)]
    assert any(a.code == "ORDER_RETRY" for a in alerts)
    assert any(a.code == "ORDER_REJECTED" and "not retryable" in a.text for a in alerts)
    # Never more than one live order per signal at the venue: each resend follows a reject.
    ledger = sim.venues["A"].ledger
    for sid in retried:
        orders = [e.order_id for e in sent if e.signal_id == sid]
        statuses = [ledger._orders[o].status.value for o in orders]
        assert statuses[:-1] == ["REJECTED"] * (len(orders) - 1), (sid, statuses)
        assert len(orders) <= 1 + 2  # max_retries
    result, _ = replay(sim.journal.run_dir)
    assert result.ok
