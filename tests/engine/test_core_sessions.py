"""The engine with trading calendars: closed sessions deny, DAY orders expire, events alert."""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.config import EngineConfig
from engine.core import Engine
from engine.messages import (
    Alert,
    AssetClass,
    CancelOrder,
    Instrument,
    OrderAccepted,
    OrderType,
    ScheduleTimer,
    Side,
    Signal,
    SignalRejected,
    SubmitOrder,
    TimeInForce,
    TimerFired,
)
from engine.sessions import load_calendars

AAPL = Instrument(
    instrument="AAPL",
    asset_class=AssetClass.EQUITY,
    currency="USD",
    price_precision=2,
    size_precision=0,
    venue_symbols={"NASDAQ": "AAPL"},
)
ES = Instrument(
    instrument="ES",
    asset_class=AssetClass.FUTURE,
    currency="USD",
    price_precision=2,
    size_precision=0,
    multiplier=50,
    venue_symbols={"CME": "ES"},
)
CALENDARS = load_calendars(
    {
        "AAPL": {"kind": "equity", "holidays": ["2024-07-04"]},
        "ES": {
            "kind": "future",
            "root": "ES",
            "months": "HMUZ",
            "expiry_rule": {"kind": "nth_weekday", "weekday": "FRI", "n": 3},
            "roll_days": 7,
        },
    }
)


def ts(text: str) -> int:
    """Return the ns of an ISO UTC time."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()) * 10**9


def engine() -> Engine:
    return Engine(EngineConfig(run_id="s", instruments=(AAPL, ES), calendars=CALENDARS))


def signal(at: int, n: int = 1, **kw: Any) -> Signal:
    fields: dict[str, Any] = {
        "ts_recv": at,
        "signal_id": f"s{n}",
        "strategy": "st",
        "account": "acc",
        "instrument": "AAPL",
        "side": Side.BUY,
        "qty": 10,
        "order_type": OrderType.LIMIT,
        "price": 19_000,
    }
    fields.update(kw)
    return Signal(**fields)


def test_session_when_closed_then_denied_with_next_open() -> None:
    eng = engine()
    [rejected] = eng.handle(signal(ts("2024-07-04T15:00:00")))  # Independence Day
    assert isinstance(rejected, SignalRejected)
    assert rejected.code == "session_closed"
    assert rejected.reason == (
        "AAPL session (AAPL) closed at 2024-07-04T15:00:00Z: next open 2024-07-05T13:30:00Z"
    )


def test_session_when_open_then_sent_and_day_order_expires_at_the_close() -> None:
    eng = engine()
    at = ts("2024-07-05T14:00:00")
    effects = eng.handle(signal(at, tif=TimeInForce.DAY))
    order = next(e for e in effects if isinstance(e, SubmitOrder))
    day = next(e for e in effects if isinstance(e, ScheduleTimer) and e.purpose == "day_expiry")
    assert day.fire_at == ts("2024-07-05T20:00:00")  # 16:00 New York, summer time
    eng.handle(OrderAccepted(ts_recv=at + 1, order_id=order.order_id, venue="NASDAQ"))
    fired = TimerFired(
        ts_recv=day.fire_at, timer_id=day.timer_id, purpose="day_expiry", order_id=order.order_id
    )
    alert, cancel = eng.handle(fired)
    assert isinstance(alert, Alert) and alert.code == "DAY_EXPIRED"
    assert isinstance(cancel, CancelOrder) and cancel.order_id == order.order_id


def test_session_when_timers_fire_then_open_close_and_roll_alerts() -> None:
    eng = engine()
    at = ts("2024-03-04T15:00:00")  # a Monday; ESH24 rolls 7 business days before 15 March
    effects = eng.handle(signal(at, instrument="ES", price=500_000))
    timers = {
        e.timer_id: e for e in effects if isinstance(e, ScheduleTimer) and e.purpose == "session"
    }
    assert len(timers) == 2  # one per calendar
    seen: list[str] = []
    for _ in range(12):  # follow the ES calendar's events for a few days
        es_timer = min(timers.values(), key=lambda t: t.fire_at)
        del timers[es_timer.timer_id]
        out = eng.handle(
            TimerFired(ts_recv=es_timer.fire_at, timer_id=es_timer.timer_id, purpose="session")
        )
        seen += [a.text for a in out if isinstance(a, Alert)]
        timers.update({e.timer_id: e for e in out if isinstance(e, ScheduleTimer)})
    assert any("AAPL: SESSION_OPEN" in text for text in seen)
    assert any("AAPL: SESSION_CLOSE" in text for text in seen)
    assert any("ES: ROLL" in text and "from ESH24 to ESM24" in text for text in seen), seen


def test_session_when_instant_outside_calendar_range_then_denied_not_raised() -> None:
    eng = engine()
    [rejected] = eng.handle(signal(5))  # 1970: before the calendar's supported years
    assert isinstance(rejected, SignalRejected) and rejected.code == "session_closed"
    assert "outside the supported years" in rejected.reason
