"""Trading calendars: when a session is open, its opens and closes, futures rolls and expiries.

Invariants:
- Pure: stdlib and msgspec only, no tz database. Instants are int nanoseconds since the
  epoch, UTC. Local wall times convert with daylight saving computed by rule: US rules for
  America/New_York and America/Chicago (1987-2006 first Sunday of April to last Sunday of
  October, since 2007 second Sunday of March to first Sunday of November, both at 02:00
  local) and EU rules for Europe/London (last Sunday of March to last Sunday of October,
  01:00 UTC). Supported instants lie in the years FIRST_YEAR to LAST_YEAR; others are a
  `SessionError`.
- A local wall time inside the spring-forward gap means the instant the gap ends; one in
  the fall-back hour means its first occurrence. The conversion never decreases.
- A session is the half-open interval [open, close). Sessions never overlap and never
  touch (touching ones are merged), so the events alternate SESSION_OPEN, SESSION_CLOSE
  and `is_open` is constant between consecutive events. An event at ts has taken effect
  at ts: `events(after, until)` returns those with after < ts <= until, sorted by
  (ts, kind: SESSION_CLOSE, EXPIRY, ROLL, SESSION_OPEN, contract). `is_open` and
  `front_contract` are constant on [ts, next_event_ts(ts)), so a caller may cache them
  until then.
- Every search is bounded: a calendar with no session opening within SEARCH_DAYS days is a
  `SessionError` naming it, never an endless loop. A 24/7 calendar never closes: its next
  open, next close and session close are None and it has no session events.
- Calendars are frozen, keyword-only msgspec Structs, built from config dicts by
  `load_calendar` / `load_calendars`. A bad field fails at build time with a
  `CalendarConfigError` naming the calendar, the field and what was expected.
- A future's contracts roll in expiry order: the front contract at ts is the first whose
  roll instant is after ts; the roll instant is the open of the session `roll_days`
  business days before the expiry date, and never later than the expiry itself.
"""

from __future__ import annotations

import bisect
import calendar as _gregorian
import datetime as dt
import enum
import functools
import re
from collections.abc import Iterator, Mapping
from typing import Literal, TypeAlias

import msgspec

SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
SEARCH_DAYS = 400
FIRST_YEAR = 1996
LAST_YEAR = 2199
MAX_ROLL_DAYS = 250
MONTH_CODES = "FGHJKMNQUVXZ"

Zone: TypeAlias = Literal["UTC", "America/New_York", "America/Chicago", "Europe/London"]
Weekday: TypeAlias = Literal["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
WEEKDAYS: tuple[Weekday, ...] = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
ZONES: tuple[Zone, ...] = ("UTC", "America/New_York", "America/Chicago", "Europe/London")
_MON_TO_FRI: tuple[Weekday, ...] = ("MON", "TUE", "WED", "THU", "FRI")
_SUN = 6

# zone -> (standard offset, daylight offset, DST rule); local = utc + offset
_ZONE_RULES: dict[str, tuple[int, int, str]] = {
    "UTC": (0, 0, ""),
    "America/New_York": (-5 * HOUR, -4 * HOUR, "us"),
    "America/Chicago": (-6 * HOUR, -5 * HOUR, "us"),
    "Europe/London": (0, HOUR, "eu"),
}

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_FIRST_DAY = dt.date(FIRST_YEAR, 1, 1).toordinal() - _EPOCH_ORDINAL
_END_DAY = dt.date(LAST_YEAR + 1, 1, 1).toordinal() - _EPOCH_ORDINAL


class CalendarConfigError(ValueError):
    """A calendar's config is invalid: the message names the calendar and the field."""


class SessionError(ValueError):
    """A calendar cannot answer: no session within reach, no contract, or out of range."""


class SessionEventKind(enum.StrEnum):
    SESSION_OPEN = "SESSION_OPEN"
    SESSION_CLOSE = "SESSION_CLOSE"
    ROLL = "ROLL"
    EXPIRY = "EXPIRY"


# Order of simultaneous events: a session closes, then contracts expire and roll, then
# the next session opens.
_KIND_ORDER = {
    SessionEventKind.SESSION_CLOSE: 0,
    SessionEventKind.EXPIRY: 1,
    SessionEventKind.ROLL: 2,
    SessionEventKind.SESSION_OPEN: 3,
}


class SessionEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A calendar event at `ts`: `contract` for EXPIRY, `from_contract`/`to_contract` for ROLL."""

    kind: SessionEventKind
    ts: int
    calendar: str
    contract: str | None = None
    from_contract: str | None = None
    to_contract: str | None = None


class Contract(msgspec.Struct, frozen=True, kw_only=True):
    """A futures contract: last trading date, expiry instant and roll instant (roll <= expiry)."""

    symbol: str
    last_trade_date: dt.date
    expiry: int
    roll: int


# -- dates, zones and daylight saving ---------------------------------------------------


def day_of(date: dt.date) -> int:
    """Return the day number (days since 1970-01-01) of a date."""
    return date.toordinal() - _EPOCH_ORDINAL


def date_of(day: int) -> dt.date:
    """Return the date of a day number, within the supported years."""
    if not _FIRST_DAY <= day < _END_DAY:
        raise SessionError(
            f"day {day} is outside the supported years {FIRST_YEAR}-{LAST_YEAR}: "
            "expected an instant in that range"
        )
    return dt.date.fromordinal(day + _EPOCH_ORDINAL)


def format_ts(ts: int) -> str:
    """Return an instant as ISO 8601 UTC text for messages."""
    seconds, nanos = divmod(ts, SECOND)
    stamp = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
    frac = f".{nanos:09d}" if nanos else ""
    return f"{stamp.isoformat()}{frac}Z"


def _weekday(day: int) -> int:
    return (day + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0


def _time_ns(t: dt.time) -> int:
    return t.hour * HOUR + t.minute * MINUTE + t.second * SECOND + t.microsecond * 1000


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> int:
    """Return the day of the n-th (n = 1..4; -1 for the last) weekday of a month."""
    if n > 0:
        first = day_of(dt.date(year, month, 1))
        return first + (weekday - _weekday(first)) % 7 + 7 * (n - 1)
    last = day_of(dt.date(year, month, _gregorian.monthrange(year, month)[1]))
    return last - (_weekday(last) - weekday) % 7


@functools.lru_cache(maxsize=1024)
def _dst_interval(zone: str, year: int) -> tuple[int, int]:
    """Return the UTC instants [start, end) of daylight saving in a zone and year."""
    std, dst, rule = _ZONE_RULES[zone]
    if rule == "us":
        if year >= 2007:
            start, end = _nth_weekday(year, 3, _SUN, 2), _nth_weekday(year, 11, _SUN, 1)
        else:
            start, end = _nth_weekday(year, 4, _SUN, 1), _nth_weekday(year, 10, _SUN, -1)
        return start * DAY + 2 * HOUR - std, end * DAY + 2 * HOUR - dst
    start, end = _nth_weekday(year, 3, _SUN, -1), _nth_weekday(year, 10, _SUN, -1)
    return start * DAY + HOUR, end * DAY + HOUR


def utc_offset(zone: Zone, ts: int) -> int:
    """Return a zone's UTC offset in nanoseconds at instant ts (local = ts + offset)."""
    std, dst, rule = _ZONE_RULES[zone]
    year = date_of(ts // DAY).year
    if not rule:
        return std
    start, end = _dst_interval(zone, year)
    return dst if start <= ts < end else std


def to_utc(zone: Zone, local: int) -> int:
    """Return the instant of a local wall time (ns since the epoch, read as if UTC)."""
    std, dst, rule = _ZONE_RULES[zone]
    year = date_of(local // DAY).year
    if not rule:
        return local - std
    start, end = _dst_interval(zone, year)
    if start <= local - dst < end:
        return local - dst
    if start <= local - std < end:
        return start  # inside the spring-forward gap: the first instant after it
    return local - std


def to_local(zone: Zone, ts: int) -> int:
    """Return the local wall time (ns, read as if UTC) of an instant."""
    return ts + utc_offset(zone, ts)


def _check_wall_time(field: str, t: dt.time) -> None:
    if t.tzinfo is not None:
        raise ValueError(f"{field}: {t} carries an offset, expected a local wall time HH:MM:SS")


def _check_weekdays(field: str, days: tuple[Weekday, ...]) -> None:
    if not days:
        raise ValueError(f"{field}: empty, expected at least one of {', '.join(WEEKDAYS)}")
    repeated = [day for day in WEEKDAYS if days.count(day) > 1]
    if repeated:
        raise ValueError(f"{field}: {', '.join(repeated)} listed twice, expected each once")


# -- the calendar engine shared by every kind -------------------------------------------


class _Calendar(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"
):
    """Base of every calendar: sessions are built per local anchor day by `_anchored`."""

    name: str

    def _check_name(self) -> None:
        if not self.name.strip():
            raise ValueError("name: empty, expected the calendar's name")

    def _zone(self) -> Zone:
        """Return the zone whose local days anchor the sessions."""
        raise NotImplementedError

    def _span(self) -> tuple[int, int]:
        """Return (before, after): local days a session may open before / close after its anchor."""
        raise NotImplementedError

    def _anchored(self, day: int) -> tuple[int, int] | None:
        """Return the session (open, close) anchored at a local day, or None."""
        raise NotImplementedError

    def never_closes(self) -> bool:
        """Return whether the calendar is open at every instant."""
        return False

    def _contract_events(self, after: int, until: int) -> list[SessionEvent]:
        return []

    def _next_contract_event_ts(self, ts: int) -> int | None:
        return None

    def _containing(self, ts: int) -> tuple[int, int] | None:
        before, after = self._span()
        day = to_local(self._zone(), ts) // DAY
        for anchor in range(day - after, day + before + 1):
            session = self._anchored(anchor)
            if session is not None and session[0] <= ts < session[1]:
                return session
        return None

    def _sessions_from(self, ts: int, until: int) -> Iterator[tuple[int, int]]:
        """Yield merged sessions in time order whose close is after ts, up to until."""
        before, after = self._span()
        pending: tuple[int, int] | None = None
        for anchor in range(ts // DAY - after - 2, until // DAY + before + 3):
            session = self._anchored(anchor)
            if session is None:
                continue
            if pending is not None and session[0] <= pending[1]:
                pending = (pending[0], max(pending[1], session[1]))
                continue
            if pending is not None and pending[1] > ts:
                yield pending
            pending = session
        if pending is not None and pending[1] > ts:
            yield pending

    def _nothing_opens(self, ts: int) -> SessionError:
        return SessionError(
            f"calendar {self.name!r}: no session opens within {SEARCH_DAYS} days after "
            f"{format_ts(ts)}: expected a calendar that opens (check weekdays and holidays)"
        )

    def _first_session(self, ts: int) -> tuple[int, int]:
        for session in self._sessions_from(ts, ts + SEARCH_DAYS * DAY):
            return session
        raise self._nothing_opens(ts)

    def is_open(self, ts: int) -> bool:
        """Return whether the session is open at ts."""
        date_of(ts // DAY)  # the supported range
        return self.never_closes() or self._containing(ts) is not None

    def next_open(self, ts: int) -> int | None:
        """Return the first session open after ts (None if the calendar never closes)."""
        if self.never_closes():
            return None
        for opened, _ in self._sessions_from(ts, ts + SEARCH_DAYS * DAY):
            if opened > ts:
                return opened
        raise self._nothing_opens(ts)

    def next_close(self, ts: int) -> int | None:
        """Return the first session close after ts (None if the calendar never closes)."""
        if self.never_closes():
            return None
        return self._first_session(ts)[1]

    def session_close(self, ts: int) -> int | None:
        """Return the close of the session open at ts: when a DAY order placed at ts expires."""
        if self.never_closes():
            return None
        opened, closed = self._first_session(ts)
        if opened > ts:
            raise SessionError(
                f"calendar {self.name!r} is closed at {format_ts(ts)}: no session contains "
                f"it; the next opens at {format_ts(opened)}"
            )
        return closed

    def events(self, after: int, until: int) -> list[SessionEvent]:
        """Return the events with after < ts <= until, in time order."""
        if until < after:
            raise SessionError(
                f"calendar {self.name!r}: events window ends at {format_ts(until)} before it "
                f"starts at {format_ts(after)}: expected until >= after"
            )
        date_of(after // DAY)
        date_of(until // DAY)
        out: list[SessionEvent] = []
        if not self.never_closes():
            for opened, closed in self._sessions_from(after, until):
                if opened > until:
                    break
                if opened > after:
                    out.append(self._event(SessionEventKind.SESSION_OPEN, opened))
                if closed > until:
                    break
                out.append(self._event(SessionEventKind.SESSION_CLOSE, closed))
        out.extend(self._contract_events(after, until))
        out.sort(key=_event_key)
        return out

    def next_event_ts(self, ts: int) -> int | None:
        """Return the instant of the first event after ts (None if there is none)."""
        found: list[int] = []
        if not self.never_closes():
            opened, closed = self._first_session(ts)
            found.append(opened if opened > ts else closed)
        contract_ts = self._next_contract_event_ts(ts)
        if contract_ts is not None:
            found.append(contract_ts)
        return min(found) if found else None

    def _event(self, kind: SessionEventKind, ts: int) -> SessionEvent:
        return SessionEvent(kind=kind, ts=ts, calendar=self.name)


def _event_key(event: SessionEvent) -> tuple[int, int, str]:
    return (
        event.ts,
        _KIND_ORDER[event.kind],
        event.contract or event.from_contract or "",
    )


# -- crypto: 24/7, optionally with maintenance windows -----------------------------------


class Maintenance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A recurring maintenance window: `minutes` long from `start` on each of `weekdays`."""

    start: dt.time
    minutes: int
    zone: Zone = "UTC"
    weekdays: tuple[Weekday, ...] = WEEKDAYS

    def __post_init__(self) -> None:
        _check_wall_time("start", self.start)
        if not 0 < self.minutes < 24 * 60:
            raise ValueError(f"minutes: must be 1-1439, got {self.minutes}")
        _check_weekdays("weekdays", self.weekdays)


@functools.lru_cache(maxsize=128)
def _longest_gap(weekdays: tuple[Weekday, ...]) -> int:
    """Return the most days from one listed weekday to the next (7 for a single one)."""
    days = sorted(WEEKDAYS.index(day) for day in weekdays)
    return max((days[(at + 1) % len(days)] - days[at]) % 7 or 7 for at in range(len(days)))


class CryptoCalendar(_Calendar, frozen=True, kw_only=True, tag="crypto"):
    """Open 24/7, or between maintenance windows when `maintenance` is set."""

    maintenance: Maintenance | None = None

    def __post_init__(self) -> None:
        self._check_name()

    def never_closes(self) -> bool:
        """Return whether the calendar is open at every instant (no maintenance)."""
        return self.maintenance is None

    def _zone(self) -> Zone:
        return "UTC" if self.maintenance is None else self.maintenance.zone

    def _span(self) -> tuple[int, int]:
        window = self.maintenance
        if window is None:
            return 0, 0
        return 0, _longest_gap(window.weekdays) + 1  # + 1: a window may end after midnight

    def _anchored(self, day: int) -> tuple[int, int] | None:
        window = self.maintenance
        if window is None or WEEKDAYS[_weekday(day)] not in window.weekdays:
            return None
        start = _time_ns(window.start)
        opened = to_utc(window.zone, day * DAY + start + window.minutes * MINUTE)
        for ahead in range(1, 8):
            if WEEKDAYS[_weekday(day + ahead)] in window.weekdays:
                closed = to_utc(window.zone, (day + ahead) * DAY + start)
                return (opened, closed) if closed > opened else None
        return None


# -- FX: one session a week ---------------------------------------------------------------


class FxCalendar(_Calendar, frozen=True, kw_only=True, tag="fx"):
    """The FX week: open from `open_day` `open_time` to `close_day` `close_time` in `zone`."""

    zone: Zone = "America/New_York"
    open_day: Weekday = "SUN"
    open_time: dt.time = dt.time(17)
    close_day: Weekday = "FRI"
    close_time: dt.time = dt.time(17)

    def __post_init__(self) -> None:
        self._check_name()
        _check_wall_time("open_time", self.open_time)
        _check_wall_time("close_time", self.close_time)
        if self._days() == 7 and self.close_time == self.open_time:
            raise ValueError(
                f"close_day, close_time: the week closes when it opens "
                f"({self.open_day} {self.open_time}), expected a close before the next open "
                "(use kind = 'crypto' for a calendar that never closes)"
            )

    def _days(self) -> int:
        days = (WEEKDAYS.index(self.close_day) - WEEKDAYS.index(self.open_day)) % 7
        if days == 0 and self.close_time <= self.open_time:
            return 7
        return days

    def _zone(self) -> Zone:
        return self.zone

    def _span(self) -> tuple[int, int]:
        return 0, self._days()

    def _anchored(self, day: int) -> tuple[int, int] | None:
        if WEEKDAYS[_weekday(day)] != self.open_day:
            return None
        opened = to_utc(self.zone, day * DAY + _time_ns(self.open_time))
        closed = to_utc(self.zone, (day + self._days()) * DAY + _time_ns(self.close_time))
        return (opened, closed) if closed > opened else None


# -- exchange days: equities and futures --------------------------------------------------


class _DaySessions(_Calendar, frozen=True, kw_only=True):
    """One session per trading date: from `open` (the evening before when open > close) to
    `close` or the date's early close; weekends (days not in `weekdays`) and holidays closed."""

    zone: Zone
    open: dt.time
    close: dt.time
    weekdays: tuple[Weekday, ...] = _MON_TO_FRI
    holidays: frozenset[dt.date] = frozenset()
    early_closes: dict[dt.date, dt.time] = {}

    def _check_day_sessions(self) -> None:
        self._check_name()
        _check_wall_time("open", self.open)
        _check_wall_time("close", self.close)
        if self.open == self.close:
            raise ValueError(
                f"open, close: both {self.open}, expected different times (a session of "
                "zero length, or of 24 hours that touches the next)"
            )
        _check_weekdays("weekdays", self.weekdays)
        for date in sorted(self.early_closes):
            closes = self.early_closes[date]
            _check_wall_time(f"early_closes[{date}]", closes)
            weekday = WEEKDAYS[date.weekday()]
            if weekday not in self.weekdays:
                raise ValueError(
                    f"early_closes[{date}]: a {weekday}, expected a trading weekday "
                    f"({', '.join(self.weekdays)})"
                )
            if date in self.holidays:
                raise ValueError(f"early_closes[{date}]: also a holiday, expected a trading date")
            if closes >= self.close:
                raise ValueError(
                    f"early_closes[{date}]: closes at {closes}, expected earlier than close "
                    f"{self.close}"
                )
            if self.open < self.close and closes <= self.open:
                raise ValueError(
                    f"early_closes[{date}]: closes at {closes}, expected later than open "
                    f"{self.open}"
                )

    def is_trading_date(self, date: dt.date) -> bool:
        """Return whether a date has a session: a trading weekday and not a holiday."""
        return WEEKDAYS[date.weekday()] in self.weekdays and date not in self.holidays

    def _business(self, day: int) -> bool:
        return WEEKDAYS[_weekday(day)] in self.weekdays and date_of(day) not in self.holidays

    def _business_on_or_before(self, day: int) -> int:
        for back in range(SEARCH_DAYS):
            if self._business(day - back):
                return day - back
        raise SessionError(
            f"calendar {self.name!r}: no trading date within {SEARCH_DAYS} days before "
            f"{date_of(day)}: expected a calendar that opens (check weekdays and holidays)"
        )

    def _business_days_before(self, day: int, count: int) -> int:
        for _ in range(count):
            day = self._business_on_or_before(day - 1)
        return day

    def _zone(self) -> Zone:
        return self.zone

    def _span(self) -> tuple[int, int]:
        return (1 if self.open > self.close else 0), 0

    def _anchored(self, day: int) -> tuple[int, int] | None:
        if WEEKDAYS[_weekday(day)] not in self.weekdays:
            return None
        date = date_of(day)
        if date in self.holidays:
            return None
        open_day = day - 1 if self.open > self.close else day
        closes = self.early_closes.get(date, self.close)
        opened = to_utc(self.zone, open_day * DAY + _time_ns(self.open))
        closed = to_utc(self.zone, day * DAY + _time_ns(closes))
        return (opened, closed) if closed > opened else None


class EquityCalendar(_DaySessions, frozen=True, kw_only=True, tag="equity"):
    """An exchange day, e.g. NYSE 09:30-16:00 America/New_York, with holidays and early closes."""

    zone: Zone = "America/New_York"
    open: dt.time = dt.time(9, 30)
    close: dt.time = dt.time(16)

    def __post_init__(self) -> None:
        self._check_day_sessions()


class NthWeekday(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="kind",
    tag="nth_weekday",
):
    """Expire on the n-th (-1: last) `weekday` of the contract month + `month_offset`,
    or the trading date before it when that is not one (ES: the third Friday)."""

    weekday: Weekday = "FRI"
    n: int = 3
    month_offset: int = 0

    def __post_init__(self) -> None:
        if self.n not in (1, 2, 3, 4, -1):
            raise ValueError(f"n: must be 1, 2, 3, 4 or -1 (the last), got {self.n}")
        _check_month_offset(self.month_offset)


class BusinessDaysBefore(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="kind",
    tag="business_days_before",
):
    """Expire `days` trading dates before day `day` (31: the month's last) of the contract
    month + `month_offset`, that day first moved back to a trading date (CL: 3 before the
    25th of the month before)."""

    day: int
    days: int = 0
    month_offset: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.day <= 31:
            raise ValueError(f"day: must be 1-31, got {self.day}")
        if not 0 <= self.days <= MAX_ROLL_DAYS:
            raise ValueError(f"days: must be 0-{MAX_ROLL_DAYS}, got {self.days}")
        _check_month_offset(self.month_offset)


def _check_month_offset(offset: int) -> None:
    if not -12 <= offset <= 12:
        raise ValueError(f"month_offset: must be -12..12, got {offset}")


ExpiryRule: TypeAlias = NthWeekday | BusinessDaysBefore


class FutureCalendar(_DaySessions, frozen=True, kw_only=True, tag="future"):
    """A futures contract's sessions (CME Globex-like by default: 17:00-16:00 Chicago,
    Sunday to Friday, a daily one-hour break), its contracts, expiries and roll.

    Contracts come from `months` (codes FGHJKMNQUVXZ) and `expiry_rule`, named
    root + month code + two-digit year (ESH24), or from explicit `expiries`
    (symbol -> last trading date). A contract expires at `expiry_time` on its last trading
    date, or at that date's close when unset; it rolls `roll_days` trading dates before."""

    zone: Zone = "America/Chicago"
    open: dt.time = dt.time(17)
    close: dt.time = dt.time(16)
    root: str = ""
    months: str = ""
    expiry_rule: ExpiryRule | None = None
    expiries: dict[str, dt.date] | None = None
    expiry_time: dt.time | None = None
    roll_days: int = 0

    def __post_init__(self) -> None:
        self._check_day_sessions()
        if self.expiry_time is not None:
            _check_wall_time("expiry_time", self.expiry_time)
        if not 0 <= self.roll_days <= MAX_ROLL_DAYS:
            raise ValueError(f"roll_days: must be 0-{MAX_ROLL_DAYS}, got {self.roll_days}")
        if (self.expiry_rule is None) == (self.expiries is None):
            raise ValueError(
                "expiry_rule, expiries: expected exactly one (a rule with root and months, "
                "or explicit symbol -> date expiries)"
            )
        if self.expiries is not None:
            self._check_expiries(self.expiries)
            return
        if not self.root.strip():
            raise ValueError("root: empty, expected the contract root (e.g. 'ES') for the rule")
        if not self.months:
            raise ValueError(f"months: empty, expected month codes from {MONTH_CODES}")
        for code in self.months:
            if code not in MONTH_CODES:
                raise ValueError(
                    f"months: {code!r} is not a month code, expected letters from {MONTH_CODES}"
                )
            if self.months.count(code) > 1:
                raise ValueError(f"months: {code!r} listed twice, expected each once")

    def _check_expiries(self, expiries: dict[str, dt.date]) -> None:
        if not expiries:
            raise ValueError("expiries: empty, expected at least one symbol -> date")
        seen: dict[dt.date, str] = {}
        for symbol in sorted(expiries):
            date = expiries[symbol]
            if not self.is_trading_date(date):
                raise ValueError(
                    f"expiries[{symbol}]: {date} is not a trading date (a "
                    f"{WEEKDAYS[date.weekday()]} or a holiday), expected one"
                )
            if date in seen:
                raise ValueError(
                    f"expiries[{symbol}]: {date} is also the expiry of {seen[date]}, expected "
                    "one contract per date"
                )
            seen[date] = symbol

    def front_contract(self, ts: int) -> Contract:
        """Return the contract that is front at ts: the first whose roll is after ts."""
        for contract, _ in self._contracts_from(ts, ts):
            if contract.roll > ts:
                return contract
        raise SessionError(
            f"calendar {self.name!r}: no contract is front at {format_ts(ts)}: the explicit "
            "expiries end before it, expected more contracts in expiries"
        )

    def contract(self, symbol: str, last_trade_date: dt.date) -> Contract:
        """Return a contract's expiry and roll instants from its last trading date."""
        expiry_day = day_of(last_trade_date)
        if self.expiry_time is not None:
            expiry = to_utc(self.zone, expiry_day * DAY + _time_ns(self.expiry_time))
        else:
            expiry = self._session_of(expiry_day, symbol)[1]
        roll_day = self._business_days_before(expiry_day, self.roll_days)
        roll = min(self._session_of(roll_day, symbol)[0], expiry)
        return Contract(symbol=symbol, last_trade_date=last_trade_date, expiry=expiry, roll=roll)

    def _session_of(self, day: int, symbol: str) -> tuple[int, int]:
        session = self._anchored(day)
        if session is None:
            raise SessionError(
                f"calendar {self.name!r}: contract {symbol} needs a session on {date_of(day)}, "
                "expected a trading date"
            )
        return session

    def _symbol(self, month_index: int) -> str:
        year, month = divmod(month_index, 12)
        return f"{self.root}{MONTH_CODES[month]}{year % 100:02d}"

    def _listed(self, month_index: int, step: int) -> int:
        """Return the first listed month index at or after (step 1) / before (-1) one."""
        year, month = divmod(month_index, 12)
        listed = sorted(MONTH_CODES.index(code) for code in self.months)
        if step > 0:
            at = bisect.bisect_left(listed, month)
            return year * 12 + listed[at] if at < len(listed) else (year + 1) * 12 + listed[0]
        at = bisect.bisect_right(listed, month)
        return year * 12 + listed[at - 1] if at > 0 else (year - 1) * 12 + listed[-1]

    def _rule_contract(self, month_index: int) -> Contract:
        rule = self.expiry_rule
        year, month = divmod(month_index + (rule.month_offset if rule else 0), 12)
        month += 1
        if isinstance(rule, NthWeekday):
            nth = _nth_weekday(year, month, WEEKDAYS.index(rule.weekday), rule.n)
            expiry_day = self._business_on_or_before(nth)
        elif isinstance(rule, BusinessDaysBefore):
            last = _gregorian.monthrange(year, month)[1]
            anchor = self._business_on_or_before(day_of(dt.date(year, month, min(rule.day, last))))
            expiry_day = self._business_days_before(anchor, rule.days)
        else:
            raise SessionError(f"calendar {self.name!r}: expiry_rule missing")
        return self.contract(self._symbol(month_index), date_of(expiry_day))

    def _contracts_from(self, ts: int, until: int) -> Iterator[tuple[Contract, str | None]]:
        """Yield (contract, next symbol) in expiry order, from one that expired at or before
        ts (or the first) to the first that rolls after until."""
        if self.expiries is not None:
            listed = sorted(self.expiries.items(), key=lambda item: item[1])
            dates = [date for _, date in listed]
            start = max(bisect.bisect_left(dates, date_of(ts // DAY - 2)) - 1, 0)
            for at in range(start, len(listed)):
                symbol, date = listed[at]
                contract = self.contract(symbol, date)
                yield contract, listed[at + 1][0] if at + 1 < len(listed) else None
                if contract.roll > until:
                    return
            return
        day = date_of(ts // DAY)
        offset = self.expiry_rule.month_offset if self.expiry_rule is not None else 0
        month_index = self._listed(day.year * 12 + day.month - 1 - offset, 1)
        known: dict[int, Contract] = {}

        def listed_contract(index: int) -> Contract:
            if index not in known:
                known[index] = self._rule_contract(index)
            return known[index]

        # Step back to a contract already expired at ts: every later one is a candidate.
        for _ in range(12 * 3):
            if listed_contract(month_index).expiry <= ts:
                break
            month_index = self._listed(month_index - 1, -1)
        else:
            raise SessionError(
                f"calendar {self.name!r}: no contract expires within 36 months before "
                f"{format_ts(ts)}: expected month_offset and roll_days within their bounds"
            )
        # A listed month is at most 12 months from the next, so this covers the window.
        for _ in range(12 * 3 + (until - ts) // (28 * DAY)):
            contract = listed_contract(month_index)
            following = self._listed(month_index + 1, 1)
            yield contract, self._symbol(following)
            if contract.roll > until:
                return
            month_index = following
        raise SessionError(
            f"calendar {self.name!r}: contracts from {format_ts(ts)} do not roll past "
            f"{format_ts(until)} within the search bound"
        )

    def _contract_events(self, after: int, until: int) -> list[SessionEvent]:
        out: list[SessionEvent] = []
        for contract, following in self._contracts_from(after, until):
            if after < contract.roll <= until and following is not None:
                out.append(
                    SessionEvent(
                        kind=SessionEventKind.ROLL,
                        ts=contract.roll,
                        calendar=self.name,
                        from_contract=contract.symbol,
                        to_contract=following,
                    )
                )
            if after < contract.expiry <= until:
                out.append(
                    SessionEvent(
                        kind=SessionEventKind.EXPIRY,
                        ts=contract.expiry,
                        calendar=self.name,
                        contract=contract.symbol,
                    )
                )
        return out

    def _next_contract_event_ts(self, ts: int) -> int | None:
        found = [
            instant
            for contract, following in self._contracts_from(ts, ts)
            for instant in (contract.roll if following is not None else None, contract.expiry)
            if instant is not None and instant > ts
        ]
        return min(found) if found else None


Calendar: TypeAlias = CryptoCalendar | FxCalendar | EquityCalendar | FutureCalendar

# -- building calendars from config ------------------------------------------------------

_FIELD_PREFIX = re.compile(r"^([a-z_]+(?:\[[^\]]*\])?): (.*)$", re.DOTALL)
_CALENDAR_KINDS = "crypto, fx, equity, future"
_RULE_KINDS = "nth_weekday, business_days_before"
_HINTS = (
    ("RFC3339 encoded time", "expected a local wall time HH:MM:SS"),
    ("RFC3339 encoded date", "expected a date YYYY-MM-DD"),
)


def _describe(where: str, exc: msgspec.ValidationError) -> str:
    text = str(exc)
    message, sep, path = text.partition(" - at `")
    location = where
    if sep:
        path = path.rstrip("`")
        if path.startswith("key` in `"):
            path = path.removeprefix("key` in `")
            message = f"{message} (in a key)"
        location = where + path.removeprefix("$")
    field = _FIELD_PREFIX.match(message)
    if field is not None:
        location, message = f"{location}.{field.group(1)}", field.group(2)
    for clue, hint in _HINTS:
        if clue in message:
            message = f"{message}, {hint}"
    kinds = _RULE_KINDS if "expiry_rule" in location else _CALENDAR_KINDS
    if message.startswith("Invalid enum value") and location.endswith("zone"):
        message = f"{message}, expected one of {', '.join(ZONES)}"
    elif message.startswith("Invalid enum value"):
        message = f"{message}, expected one of {', '.join(WEEKDAYS)}"
    elif "field `kind`" in message or (
        message.startswith("Invalid value") and location.endswith("kind")
    ):
        message = f"{message}, expected one of {kinds}"
    return f"{location}: {message}"


def load_calendar(raw: object, *, where: str = "calendar") -> Calendar:
    """Build a calendar from a config dict (TOML or JSON); `where` names it in errors."""
    try:
        calendar: Calendar = msgspec.convert(raw, Calendar)
    except msgspec.ValidationError as exc:
        raise CalendarConfigError(_describe(where, exc)) from None
    return calendar


def load_calendars(raw: Mapping[str, object], *, where: str = "calendars") -> dict[str, Calendar]:
    """Build calendars from a name -> config mapping; each name becomes the calendar's name."""
    out: dict[str, Calendar] = {}
    for name in sorted(raw):
        entry = raw[name]
        path = f"{where}.{name}"
        if not isinstance(entry, Mapping):
            raise CalendarConfigError(
                f"{path}: got {type(entry).__name__}, expected a table of calendar fields"
            )
        given = entry.get("name", name)
        if given != name:
            raise CalendarConfigError(
                f"{path}.name: {given!r} differs from the table name, expected {name!r} or no name"
            )
        out[name] = load_calendar({**entry, "name": name}, where=path)
    return out
