"""Trading calendars: DST arithmetic against zoneinfo, opens and closes on known dates,
holidays and early closes, the FX week, futures breaks, expiries and rolls, config errors,
and the event properties (sorted, alternating, is_open constant between events)."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import zoneinfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.sessions import (
    DAY,
    HOUR,
    SEARCH_DAYS,
    ZONES,
    BusinessDaysBefore,
    Calendar,
    CalendarConfigError,
    CryptoCalendar,
    EquityCalendar,
    FutureCalendar,
    FxCalendar,
    Maintenance,
    NthWeekday,
    SessionError,
    SessionEventKind,
    format_ts,
    load_calendar,
    load_calendars,
    to_local,
    to_utc,
    utc_offset,
)

OPEN, CLOSE = SessionEventKind.SESSION_OPEN, SessionEventKind.SESSION_CLOSE
ROLL, EXPIRY = SessionEventKind.ROLL, SessionEventKind.EXPIRY
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def utc(text: str) -> int:
    """Return the instant of an ISO UTC time like '2024-03-08 14:30'."""
    moment = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return (moment - EPOCH) // dt.timedelta(microseconds=1) * 1000


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def t(text: str) -> dt.time:
    return dt.time.fromisoformat(text)


NYSE = EquityCalendar(
    name="nyse",
    holidays=frozenset({d("2024-07-04"), d("2024-11-28"), d("2024-12-25")}),
    early_closes={d("2024-07-03"): t("13:00"), d("2024-11-29"): t("13:00")},
)
LSE = EquityCalendar(name="lse", zone="Europe/London", open=t("08:00"), close=t("16:30"))
FX = FxCalendar(name="fx")
BTC = CryptoCalendar(name="btc")
BTC_WEEKLY = CryptoCalendar(
    name="btc-weekly", maintenance=Maintenance(start=t("23:30"), minutes=60, weekdays=("WED",))
)
# A daily window at 02:30 New York: on the spring-forward day it starts inside the gap.
BTC_NY = CryptoCalendar(
    name="btc-ny", maintenance=Maintenance(start=t("02:30"), minutes=45, zone="America/New_York")
)
ES = FutureCalendar(
    name="es",
    root="ES",
    months="HMUZ",
    expiry_rule=NthWeekday(weekday="FRI", n=3),
    expiry_time=t("08:30"),
    roll_days=6,
    holidays=frozenset({d("2024-12-25"), d("2025-01-01")}),
)
CL = FutureCalendar(
    name="cl",
    root="CL",
    months="FGHJKMNQUVXZ",
    expiry_rule=BusinessDaysBefore(day=25, days=3, month_offset=-1),
    holidays=frozenset({d("2024-06-19"), d("2024-07-04"), d("2024-12-25")}),
)
LISTED = FutureCalendar(
    name="listed",
    expiries={"XH24": d("2024-03-15"), "XM24": d("2024-06-21"), "XU24": d("2024-09-20")},
    roll_days=2,
)
CALENDARS: list[Calendar] = [NYSE, LSE, FX, BTC_WEEKLY, BTC_NY, ES, CL]
FUTURES = [ES, CL]
INSTANTS = st.integers(min_value=utc("2000-01-01 00:00"), max_value=utc("2040-01-01 00:00"))


# -- DST arithmetic ----------------------------------------------------------------------


@given(zone=st.sampled_from(ZONES), ts=INSTANTS)
def test_utc_offset_when_instant_2000_2040_then_equals_zoneinfo(zone: str, ts: int) -> None:
    moment = EPOCH + dt.timedelta(microseconds=ts // 1000)
    offset = moment.astimezone(zoneinfo.ZoneInfo(zone)).utcoffset()
    assert offset is not None
    assert utc_offset(zone, ts) == offset // dt.timedelta(microseconds=1) * 1000


@given(zone=st.sampled_from(ZONES), ts=INSTANTS)
def test_to_utc_when_wall_time_then_zoneinfo_first_occurrence_or_gap_end(
    zone: str, ts: int
) -> None:
    local = ts - ts % (60 * 10**9)  # any wall time, to the minute
    wall = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=local // 1000)
    tz = zoneinfo.ZoneInfo(zone)
    aware = wall.replace(tzinfo=tz, fold=0)
    if aware.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None) != wall:
        # In the spring-forward gap (whole hours): the instant the gap ends.
        aware = (wall.replace(minute=0) + dt.timedelta(hours=1)).replace(tzinfo=tz)
    expected = (aware - EPOCH) // dt.timedelta(microseconds=1) * 1000
    assert to_utc(zone, local) == expected


@given(zone=st.sampled_from(ZONES), ts=INSTANTS, step=st.integers(1, 3 * HOUR))
def test_to_utc_when_wall_times_increase_then_never_decreases(
    zone: str, ts: int, step: int
) -> None:
    assert to_utc(zone, ts) <= to_utc(zone, ts + step)
    assert to_utc(zone, to_local(zone, ts)) <= ts


def test_utc_offset_when_us_and_london_transitions_then_switch_at_the_rule_instant() -> None:
    # US: second Sunday of March 02:00 EST = 07:00Z; first Sunday of November 02:00 EDT = 06:00Z.
    assert utc_offset("America/New_York", utc("2024-03-10 06:59:59")) == -5 * HOUR
    assert utc_offset("America/New_York", utc("2024-03-10 07:00")) == -4 * HOUR
    assert utc_offset("America/New_York", utc("2024-11-03 05:59:59")) == -4 * HOUR
    assert utc_offset("America/New_York", utc("2024-11-03 06:00")) == -5 * HOUR
    assert utc_offset("America/Chicago", utc("2024-03-10 08:00")) == -5 * HOUR
    # EU: last Sunday of March / October at 01:00Z.
    assert utc_offset("Europe/London", utc("2024-03-31 00:59:59")) == 0
    assert utc_offset("Europe/London", utc("2024-03-31 01:00")) == HOUR
    assert utc_offset("Europe/London", utc("2024-10-27 01:00")) == 0
    # Before 2007 the US used the first Sunday of April to the last Sunday of October.
    assert utc_offset("America/New_York", utc("2006-04-02 06:59")) == -5 * HOUR
    assert utc_offset("America/New_York", utc("2006-04-02 07:00")) == -4 * HOUR


def test_utc_offset_when_year_out_of_range_then_session_error() -> None:
    with pytest.raises(SessionError, match="outside the supported years 1996-2199"):
        utc_offset("America/New_York", utc("1990-06-01 00:00"))
    with pytest.raises(SessionError, match="outside the supported years"):
        NYSE.is_open(utc("2250-06-01 00:00"))


# -- equity ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "opens", "closes"),
    [
        ("2024-03-08", "2024-03-08 14:30", "2024-03-08 21:00"),  # EST
        ("2024-03-11", "2024-03-11 13:30", "2024-03-11 20:00"),  # EDT from Sunday 10th
        ("2024-11-01", "2024-11-01 13:30", "2024-11-01 20:00"),  # still EDT
        ("2024-11-04", "2024-11-04 14:30", "2024-11-04 21:00"),  # EST from Sunday 3rd
    ],
)
def test_equity_next_open_when_new_york_dst_changes_then_utc_open_moves(
    day: str, opens: str, closes: str
) -> None:
    midnight = utc(f"{day} 00:00")
    assert NYSE.next_open(midnight) == utc(opens)
    assert NYSE.next_close(midnight) == utc(closes)
    assert not NYSE.is_open(utc(opens) - 1)
    assert NYSE.is_open(utc(opens))
    assert NYSE.is_open(utc(closes) - 1)
    assert not NYSE.is_open(utc(closes))


@pytest.mark.parametrize(
    ("day", "opens"),
    [
        ("2024-03-29", "2024-03-29 08:00"),  # GMT
        ("2024-04-02", "2024-04-02 07:00"),  # BST from Sunday 31st
        ("2024-10-25", "2024-10-25 07:00"),  # BST
        ("2024-10-28", "2024-10-28 08:00"),  # GMT from Sunday 27th
    ],
)
def test_equity_next_open_when_london_dst_changes_then_utc_open_moves(day: str, opens: str) -> None:
    assert LSE.next_open(utc(f"{day} 00:00")) == utc(opens)


@pytest.mark.parametrize(
    ("monday", "overlap_hours"),
    [
        ("2024-03-04", 2),  # both on winter time
        ("2024-03-11", 3),  # New York on summer time, London not yet
        ("2024-04-08", 2),  # both on summer time
        ("2024-10-28", 3),  # London back on winter time, New York not yet
        ("2024-11-04", 2),  # both on winter time
    ],
)
def test_equity_sessions_when_new_york_and_london_dst_differ_then_overlap_changes(
    monday: str, overlap_hours: int
) -> None:
    start = utc(f"{monday} 00:00")
    for offset in range(5):
        day = start + offset * DAY
        nyse_open, lse_close = NYSE.next_open(day), LSE.next_close(day)
        assert nyse_open is not None and lse_close is not None
        assert lse_close - nyse_open == overlap_hours * HOUR


def test_equity_is_open_when_weekend_then_closed_until_monday() -> None:
    friday_close = utc("2024-03-08 21:00")
    assert not NYSE.is_open(utc("2024-03-09 15:00"))
    assert not NYSE.is_open(utc("2024-03-10 15:00"))
    assert NYSE.next_open(friday_close) == utc("2024-03-11 13:30")


def test_equity_holiday_when_independence_day_then_closed_and_next_open_is_the_day_after() -> None:
    assert not NYSE.is_open(utc("2024-07-04 15:00"))
    assert NYSE.next_open(utc("2024-07-03 18:00")) == utc("2024-07-05 13:30")


def test_equity_early_close_when_day_before_holiday_then_closes_at_1300_local() -> None:
    during = utc("2024-07-03 15:00")
    assert NYSE.session_close(during) == utc("2024-07-03 17:00")
    assert NYSE.is_open(utc("2024-07-03 17:00") - 1)
    assert not NYSE.is_open(utc("2024-07-03 17:00"))
    # The day after Thanksgiving closes at 13:00 EST.
    assert NYSE.session_close(utc("2024-11-29 15:00")) == utc("2024-11-29 18:00")


def test_equity_session_close_when_closed_then_session_error_names_next_open() -> None:
    with pytest.raises(SessionError, match=r"'nyse' is closed at 2024-03-09T15:00:00Z.*"):
        NYSE.session_close(utc("2024-03-09 15:00"))
    with pytest.raises(SessionError, match="next opens at 2024-03-11T13:30:00Z"):
        NYSE.session_close(utc("2024-03-09 15:00"))


def test_equity_next_open_when_always_closed_then_bounded_search_error() -> None:
    mondays = frozenset(d("2024-01-01") + dt.timedelta(weeks=k) for k in range(120))
    never = EquityCalendar(name="never", weekdays=("MON",), holidays=mondays)
    start = utc("2024-01-01 00:00")
    assert not never.is_open(start + 9 * HOUR + 30 * 60 * 10**9)
    with pytest.raises(SessionError, match=f"'never': no session opens within {SEARCH_DAYS}"):
        never.next_open(start)
    with pytest.raises(SessionError, match="no session opens within"):
        never.next_event_ts(start)


def test_equity_events_when_window_crosses_holiday_then_open_close_pairs_skip_it() -> None:
    events = NYSE.events(utc("2024-07-02 21:00"), utc("2024-07-06 00:00"))
    assert [(e.kind, format_ts(e.ts)) for e in events] == [
        (OPEN, "2024-07-03T13:30:00Z"),
        (CLOSE, "2024-07-03T17:00:00Z"),
        (OPEN, "2024-07-05T13:30:00Z"),
        (CLOSE, "2024-07-05T20:00:00Z"),
    ]
    assert {e.calendar for e in events} == {"nyse"}


def test_equity_events_when_event_on_window_edge_then_after_excluded_until_included() -> None:
    opens, closes = utc("2024-07-05 13:30"), utc("2024-07-05 20:00")
    assert [e.ts for e in NYSE.events(opens, closes)] == [closes]
    assert NYSE.events(opens - 1, opens)[0].ts == opens
    with pytest.raises(SessionError, match="expected until >= after"):
        NYSE.events(closes, opens)


# -- FX ----------------------------------------------------------------------------------


def test_fx_week_when_us_dst_starts_sunday_then_opens_2100_utc() -> None:
    # Friday 17:00 EST = 22:00Z; that Sunday DST starts, so 17:00 EDT = 21:00Z.
    assert FX.session_close(utc("2024-03-06 12:00")) == utc("2024-03-08 22:00")
    assert not FX.is_open(utc("2024-03-08 22:00"))
    assert not FX.is_open(utc("2024-03-10 20:59"))
    assert FX.next_open(utc("2024-03-08 22:00")) == utc("2024-03-10 21:00")
    assert FX.is_open(utc("2024-03-10 21:00"))


def test_fx_week_when_us_dst_ends_sunday_then_opens_2200_utc() -> None:
    assert FX.next_close(utc("2024-10-30 12:00")) == utc("2024-11-01 21:00")
    assert FX.next_open(utc("2024-11-01 21:00")) == utc("2024-11-03 22:00")


def test_fx_is_open_when_midweek_then_open_through_midnight_and_17h() -> None:
    for when in ("2024-03-12 00:00", "2024-03-13 21:00", "2024-03-14 22:00"):
        assert FX.is_open(utc(when))
    events = FX.events(utc("2024-03-11 00:00"), utc("2024-03-18 00:00"))
    assert [(e.kind, format_ts(e.ts)) for e in events] == [
        (CLOSE, "2024-03-15T21:00:00Z"),
        (OPEN, "2024-03-17T21:00:00Z"),
    ]


# -- crypto ------------------------------------------------------------------------------


def test_crypto_when_no_maintenance_then_always_open_without_events() -> None:
    now = utc("2024-03-10 07:00")
    assert BTC.never_closes()
    assert BTC.is_open(now)
    assert (BTC.next_open(now), BTC.next_close(now), BTC.session_close(now)) == (None,) * 3
    assert BTC.events(now, now + 30 * DAY) == []
    assert BTC.next_event_ts(now) is None


def test_crypto_maintenance_when_weekly_window_then_closed_inside_it() -> None:
    assert BTC_WEEKLY.is_open(utc("2024-03-13 23:29"))
    assert not BTC_WEEKLY.is_open(utc("2024-03-13 23:30"))
    assert not BTC_WEEKLY.is_open(utc("2024-03-14 00:29"))
    assert BTC_WEEKLY.is_open(utc("2024-03-14 00:30"))
    assert BTC_WEEKLY.session_close(utc("2024-03-14 12:00")) == utc("2024-03-20 23:30")
    events = BTC_WEEKLY.events(utc("2024-03-10 00:00"), utc("2024-03-21 00:00"))
    assert [(e.kind, format_ts(e.ts)) for e in events] == [
        (CLOSE, "2024-03-13T23:30:00Z"),
        (OPEN, "2024-03-14T00:30:00Z"),
        (CLOSE, "2024-03-20T23:30:00Z"),
    ]


def test_crypto_maintenance_when_window_starts_in_dst_gap_then_starts_at_gap_end() -> None:
    # 02:30 New York does not exist on 2024-03-10: the window runs 03:00-03:15 EDT.
    assert BTC_NY.next_close(utc("2024-03-10 00:00")) == utc("2024-03-10 07:00")
    assert BTC_NY.next_open(utc("2024-03-10 00:00")) == utc("2024-03-10 07:15")
    # 02:30 on the fall-back day is after the repeated hour: 02:30 EST.
    assert BTC_NY.next_close(utc("2024-11-03 00:00")) == utc("2024-11-03 07:30")


def test_crypto_maintenance_when_window_falls_inside_dst_gap_then_no_close_that_day() -> None:
    # 02:00-02:30 New York does not exist on 2024-03-10: the sessions either side touch
    # and merge, so there is no close and no open that day.
    cal = CryptoCalendar(
        name="gap", maintenance=Maintenance(start=t("02:00"), minutes=30, zone="America/New_York")
    )
    events = cal.events(utc("2024-03-09 00:00"), utc("2024-03-12 00:00"))
    assert [(e.kind, format_ts(e.ts)) for e in events] == [
        (CLOSE, "2024-03-09T07:00:00Z"),
        (OPEN, "2024-03-09T07:30:00Z"),
        (CLOSE, "2024-03-11T06:00:00Z"),
        (OPEN, "2024-03-11T06:30:00Z"),
    ]
    assert cal.is_open(utc("2024-03-10 07:00"))
    assert cal.session_close(utc("2024-03-10 07:00")) == utc("2024-03-11 06:00")


# -- futures -----------------------------------------------------------------------------


def test_future_sessions_when_globex_week_then_sunday_open_and_daily_break() -> None:
    # DST starts Sunday 2024-03-10: 17:00 CDT = 22:00Z; the break is 16:00-17:00 CDT.
    assert not ES.is_open(utc("2024-03-09 12:00"))
    assert ES.next_open(utc("2024-03-09 12:00")) == utc("2024-03-10 22:00")
    assert ES.session_close(utc("2024-03-11 15:00")) == utc("2024-03-11 21:00")
    assert not ES.is_open(utc("2024-03-11 21:00"))
    assert not ES.is_open(utc("2024-03-11 21:59"))
    assert ES.is_open(utc("2024-03-11 22:00"))
    # The Friday before, on CST: the week closes 16:00 CST = 22:00Z.
    assert ES.session_close(utc("2024-03-08 12:00")) == utc("2024-03-08 22:00")
    assert ES.next_open(utc("2024-03-08 22:00")) == utc("2024-03-10 22:00")


def test_future_front_contract_when_roll_instant_passes_then_next_contract() -> None:
    # ESH24 expires Friday 2024-03-15 (third Friday); 6 trading dates earlier is Thursday
    # 2024-03-07, whose session opens Wednesday 17:00 CST = 23:00Z.
    roll = utc("2024-03-06 23:00")
    before, after = ES.front_contract(roll - 1), ES.front_contract(roll)
    assert (before.symbol, after.symbol) == ("ESH24", "ESM24")
    assert before.last_trade_date == d("2024-03-15")
    assert before.roll == roll
    assert before.expiry == utc("2024-03-15 13:30")  # 08:30 CDT
    assert after.last_trade_date == d("2024-06-21")


def test_future_events_when_window_spans_roll_and_expiry_then_both_in_order() -> None:
    events = ES.events(utc("2024-03-06 00:00"), utc("2024-03-16 00:00"))
    roll = utc("2024-03-06 23:00")
    at_roll = [e.kind for e in events if e.ts == roll]
    assert at_roll == [ROLL, OPEN]  # the roll is in force when the session opens
    (rolled,) = [e for e in events if e.kind is ROLL]
    assert (rolled.from_contract, rolled.to_contract) == ("ESH24", "ESM24")
    (expired,) = [e for e in events if e.kind is EXPIRY]
    assert (expired.contract, expired.ts) == ("ESH24", utc("2024-03-15 13:30"))
    assert ES.next_event_ts(utc("2024-03-15 13:00")) == utc("2024-03-15 13:30")


def test_future_expiry_rule_when_third_friday_is_holiday_then_thursday() -> None:
    es = msgspec.structs.replace(ES, holidays=frozenset({d("2024-06-21")}))
    assert es.front_contract(utc("2024-04-01 00:00")).last_trade_date == d("2024-06-20")


@pytest.mark.parametrize(
    ("when", "symbol", "last_trade"),
    [
        ("2024-04-01", "CLK24", "2024-04-22"),  # 25 April is a Thursday
        ("2024-06-01", "CLN24", "2024-06-20"),  # Juneteenth (19th) is a holiday
        ("2024-08-01", "CLU24", "2024-08-20"),  # 25 August is a Sunday: from Friday 23rd
        ("2024-12-01", "CLF25", "2024-12-19"),  # Christmas: from Tuesday 24th
    ],
)
def test_future_expiry_rule_when_business_days_before_25th_then_cme_crude_dates(
    when: str, symbol: str, last_trade: str
) -> None:
    front = CL.front_contract(utc(f"{when} 00:00"))
    assert (front.symbol, front.last_trade_date) == (symbol, d(last_trade))
    assert front.expiry == CL.session_close(front.expiry - 1)


def test_future_explicit_expiries_when_after_last_roll_then_session_error() -> None:
    assert LISTED.front_contract(utc("2024-01-02 00:00")).symbol == "XH24"
    last = LISTED.front_contract(utc("2024-07-01 00:00"))
    assert last.symbol == "XU24"
    with pytest.raises(SessionError, match="'listed': no contract is front at"):
        LISTED.front_contract(last.roll)
    events = LISTED.events(last.roll - 1, last.expiry)
    assert [e.kind for e in events if e.kind in (ROLL, EXPIRY)] == [EXPIRY]


def test_future_explicit_expiries_when_roll_2_days_then_rolls_at_that_session_open() -> None:
    # XH24 last trades Friday 2024-03-15; 2 trading dates earlier is Wednesday the 13th,
    # whose session opens Tuesday 17:00 CDT = 22:00Z.
    contract = LISTED.front_contract(utc("2024-03-01 00:00"))
    assert contract.roll == utc("2024-03-12 22:00")
    assert contract.expiry == utc("2024-03-15 21:00")  # no expiry_time: the 16:00 CDT close


# -- config ------------------------------------------------------------------------------

NYSE_TOML = """
[calendars.nyse]
kind = "equity"
zone = "America/New_York"
open = 09:30:00
close = 16:00:00
holidays = [2024-07-04, 2024-11-28, 2024-12-25]
early_closes = { "2024-07-03" = 13:00:00, "2024-11-29" = 13:00:00 }

[calendars.es]
kind = "future"
root = "ES"
months = "HMUZ"
expiry_rule = { kind = "nth_weekday", weekday = "FRI", n = 3 }
expiry_time = 08:30:00
roll_days = 6
holidays = [2024-12-25, 2025-01-01]
"""


def test_load_calendars_when_toml_then_equals_the_structs_and_names_from_keys() -> None:
    loaded = load_calendars(tomllib.loads(NYSE_TOML)["calendars"])
    assert loaded == {"es": ES, "nyse": NYSE}


def test_load_calendar_when_json_then_same_as_toml() -> None:
    raw = msgspec.json.decode(msgspec.json.encode(tomllib.loads(NYSE_TOML)["calendars"]["es"]))
    assert load_calendar({**raw, "name": "es"}) == ES


def test_load_calendars_when_name_differs_from_key_then_error() -> None:
    with pytest.raises(CalendarConfigError, match=r"calendars.a.name: 'b' differs"):
        load_calendars({"a": {"kind": "crypto", "name": "b"}})
    with pytest.raises(
        CalendarConfigError, match=re.escape("calendars.a: got list, expected a table")
    ):
        load_calendars({"a": []})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"kind": "equity", "zone": "Asia/Tokyo"},
            "calendars.x.zone: Invalid enum value 'Asia/Tokyo', expected one of UTC, "
            "America/New_York, America/Chicago, Europe/London",
        ),
        (
            {"kind": "equity", "open": "9:30"},
            "calendars.x.open: Invalid RFC3339 encoded time, expected a local wall time HH:MM:SS",
        ),
        (
            {"kind": "equity", "holidays": ["2024-13-01"]},
            "calendars.x.holidays[0]: Invalid RFC3339 encoded date, expected a date YYYY-MM-DD",
        ),
        (
            {"kind": "equity", "early_closes": {"July 3": "13:00:00"}},
            "calendars.x.early_closes: Invalid RFC3339 encoded date (in a key), expected a date",
        ),
        ({"kind": "equity", "opn": "09:30:00"}, "calendars.x: Object contains unknown field `opn`"),
        ({"kind": "equity", "close": "09:30:00"}, "calendars.x: open, close: both 09:30:00"),
        (
            {"kind": "equity", "weekdays": ["MON", "Tue"]},
            "calendars.x.weekdays[1]: Invalid enum value 'Tue', expected one of MON, TUE",
        ),
        ({"kind": "equity", "weekdays": []}, "calendars.x.weekdays: empty, expected at least"),
        (
            {"kind": "equity", "weekdays": ["MON", "MON"]},
            "calendars.x.weekdays: MON listed twice, expected each once",
        ),
        (
            {"kind": "equity", "early_closes": {"2024-07-06": "13:00:00"}},
            "calendars.x.early_closes[2024-07-06]: a SAT, expected a trading weekday "
            "(MON, TUE, WED, THU, FRI)",
        ),
        (
            {"kind": "equity", "early_closes": {"2024-07-03": "16:30:00"}},
            "calendars.x.early_closes[2024-07-03]: closes at 16:30:00, expected earlier than "
            "close 16:00:00",
        ),
        (
            {"kind": "equity", "early_closes": {"2024-07-03": "09:00:00"}},
            "expected later than open 09:30:00",
        ),
        (
            {
                "kind": "equity",
                "holidays": ["2024-07-03"],
                "early_closes": {"2024-07-03": "13:00:00"},
            },
            "calendars.x.early_closes[2024-07-03]: also a holiday",
        ),
        ({}, "calendars.x: Object missing required field `kind`, expected one of crypto, fx"),
        ({"kind": "stock"}, "calendars.x.kind: Invalid value 'stock', expected one of crypto"),
        (
            {"kind": "fx", "close_day": "SUN"},
            "calendars.x: close_day, close_time: the week closes when it opens (SUN 17:00:00)",
        ),
        (
            {"kind": "crypto", "maintenance": {"start": "00:00:00", "minutes": 0}},
            "calendars.x.maintenance.minutes: must be 1-1439, got 0",
        ),
        (
            {"kind": "crypto", "maintenance": {"start": "00:00:00+01:00", "minutes": 5}},
            "calendars.x.maintenance.start: 00:00:00+01:00 carries an offset",
        ),
        (
            {"kind": "future", "root": "ES", "months": "H"},
            "calendars.x: expiry_rule, expiries: expected exactly one",
        ),
        (
            {
                "kind": "future",
                "months": "H",
                "expiry_rule": {"kind": "nth_weekday"},
                "expiries": {"A": "2024-03-15"},
            },
            "calendars.x: expiry_rule, expiries: expected exactly one",
        ),
        (
            {
                "kind": "future",
                "root": "ES",
                "months": "HMA",
                "expiry_rule": {"kind": "nth_weekday"},
            },
            "calendars.x.months: 'A' is not a month code, expected letters from FGHJKMNQUVXZ",
        ),
        (
            {"kind": "future", "months": "H", "expiry_rule": {"kind": "nth_weekday"}},
            "calendars.x.root: empty, expected the contract root",
        ),
        (
            {"kind": "future", "root": "ES", "months": "H", "expiry_rule": {"kind": "first"}},
            "calendars.x.expiry_rule.kind: Invalid value 'first', expected one of nth_weekday, "
            "business_days_before",
        ),
        (
            {
                "kind": "future",
                "root": "ES",
                "months": "H",
                "expiry_rule": {"kind": "nth_weekday", "n": 5},
            },
            "calendars.x.expiry_rule.n: must be 1, 2, 3, 4 or -1 (the last), got 5",
        ),
        (
            {
                "kind": "future",
                "root": "CL",
                "months": "H",
                "expiry_rule": {"kind": "business_days_before", "day": 32},
            },
            "calendars.x.expiry_rule.day: must be 1-31, got 32",
        ),
        (
            {"kind": "future", "expiries": {"A": "2024-03-16"}},
            "calendars.x.expiries[A]: 2024-03-16 is not a trading date (a SAT or a holiday)",
        ),
        (
            {"kind": "future", "expiries": {"A": "2024-03-15", "B": "2024-03-15"}},
            "calendars.x.expiries[B]: 2024-03-15 is also the expiry of A",
        ),
        (
            {"kind": "future", "expiries": {"A": "2024-03-15"}, "roll_days": -1},
            "calendars.x.roll_days: must be 0-250, got -1",
        ),
        (
            {"kind": "future", "expiries": {"A": "2024-03-15"}, "roll_days": "5"},
            "calendars.x.roll_days: Expected `int`, got `str`",
        ),
        ({"kind": "crypto", "name": " "}, "calendars.x.name: empty, expected the calendar's name"),
    ],
)
def test_load_calendar_when_field_invalid_then_error_names_field_and_expectation(
    raw: dict[str, object], message: str
) -> None:
    with pytest.raises(CalendarConfigError, match=re.escape(message)):
        load_calendar({"name": "x", **raw}, where="calendars.x")


def test_calendar_when_built_directly_with_bad_field_then_value_error() -> None:
    with pytest.raises(ValueError, match="minutes: must be 1-1439, got 1440"):
        Maintenance(start=t("00:00"), minutes=1440)


# -- properties over every calendar --------------------------------------------------------

WINDOWS = st.integers(min_value=1, max_value=15 * DAY)
calendars = pytest.mark.parametrize("cal", CALENDARS, ids=lambda cal: cal.name)


@calendars
@given(after=INSTANTS, length=WINDOWS)
def test_events_when_any_window_then_sorted_and_sessions_alternate(
    cal: Calendar, after: int, length: int
) -> None:
    events = cal.events(after, after + length)
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert all(after < e.ts <= after + length for e in events)
    sessions = [e for e in events if e.kind in (OPEN, CLOSE)]
    state = cal.is_open(after)
    for event in sessions:
        assert event.kind is (CLOSE if state else OPEN)
        state = event.kind is OPEN
        assert cal.is_open(event.ts) is state
        assert cal.is_open(event.ts - 1) is not state


@calendars
@given(after=INSTANTS, length=WINDOWS, probes=st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_is_open_when_between_consecutive_events_then_constant(
    cal: Calendar, after: int, length: int, probes: list[float]
) -> None:
    until = after + length
    changes = [(e.ts, e.kind is OPEN) for e in cal.events(after, until) if e.kind in (OPEN, CLOSE)]
    for probe in probes:
        at = after + int(probe * length)
        state = cal.is_open(after)
        for ts, opened in changes:
            if ts <= at:
                state = opened
        assert cal.is_open(at) is state


@calendars
@given(ts=INSTANTS)
def test_next_open_and_close_when_any_instant_then_after_it_and_at_a_transition(
    cal: Calendar, ts: int
) -> None:
    opens, closes = cal.next_open(ts), cal.next_close(ts)
    assert opens is not None and closes is not None
    assert opens > ts and cal.is_open(opens) and not cal.is_open(opens - 1)
    assert closes > ts and not cal.is_open(closes) and cal.is_open(closes - 1)
    if cal.is_open(ts):
        assert cal.session_close(ts) == closes < opens
    else:
        assert opens < closes
    upcoming = cal.next_event_ts(ts)
    assert upcoming is not None and ts < upcoming <= min(opens, closes)
    assert {e.ts for e in cal.events(ts, upcoming)} == {upcoming}


@pytest.mark.parametrize("cal", FUTURES, ids=lambda cal: cal.name)
@given(after=INSTANTS, length=st.integers(min_value=1, max_value=200 * DAY))
def test_front_contract_when_roll_events_then_changes_exactly_at_them(
    cal: FutureCalendar, after: int, length: int
) -> None:
    events = cal.events(after, after + length)
    front = cal.front_contract(after)
    assert front.roll > after
    for event in events:
        if event.kind is ROLL:
            assert event.ts == front.roll
            assert event.from_contract == front.symbol
            front = cal.front_contract(event.ts)
            assert event.to_contract == front.symbol
        if event.kind is EXPIRY:
            assert cal.front_contract(event.ts).expiry > event.ts  # never front once expired
    assert cal.front_contract(after + length) == front
