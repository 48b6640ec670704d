"""Every message that enters or leaves the engine.

Invariants:
- Messages are frozen, keyword-only msgspec Structs. Commands are imperative
  (`SubmitOrder`), events past tense (`OrderFilled`).
- Every message has `ts_recv` (nanoseconds, local time of receipt, stamped by the
  runner's clock) and, where the source gives one, `ts_event` (source time).
- Prices and quantities are integers in instrument units (value x 10^precision);
  fees and P&L are integers in notional units (price units x size units, that is
  value x 10^(price_precision + size_precision)). Floats never appear.
- A field name means one thing with one type in every message: the journal stores the
  union of all fields as typed columns, so `price` is an int64 column everywhere.
- `KINDS` fixes the journal code of each message type. Append new kinds at the end;
  never reorder (journals on disk store the index).
"""

from __future__ import annotations

import enum

import msgspec


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    DAY = "DAY"


class Liquidity(enum.StrEnum):
    MAKER = "MAKER"
    TAKER = "TAKER"


class OrderStatus(enum.StrEnum):
    PENDING_NEW = "PENDING_NEW"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    PENDING_REPLACE = "PENDING_REPLACE"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class AssetClass(enum.StrEnum):
    CRYPTO = "CRYPTO"
    EQUITY = "EQUITY"
    FX = "FX"
    FUTURE = "FUTURE"
    OPTION = "OPTION"


class Severity(enum.StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class TradingState(enum.StrEnum):
    ACTIVE = "ACTIVE"  # anything the gauntlet passes
    REDUCING = "REDUCING"  # only orders that bring a position toward zero
    HALTED = "HALTED"  # nothing new; working orders were canceled


class SignalIntent(enum.StrEnum):
    ORDER = "ORDER"  # trade `qty` on `side`
    TARGET = "TARGET"  # bring the strategy's position to `target`
    CANCEL = "CANCEL"  # cancel the open orders of the signal `cancels`


class Message(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="kind", tag=True):
    """Base of every message: `ts_recv` is "now" for the engine."""

    ts_recv: int


# --- reference data -------------------------------------------------------------------


class Instrument(Message, frozen=True, kw_only=True, gc=False):
    """Reference data of one tradable instrument (an input when it changes)."""

    ts_recv: int = 0
    instrument: str
    asset_class: AssetClass
    currency: str
    price_precision: int
    size_precision: int
    tick_size: int = 1
    lot_size: int = 1
    min_qty: int = 0
    min_notional: int = 0  # notional units
    multiplier: int = 1
    venue_symbols: dict[str, str] = {}  # venue -> that venue's symbol
    sector: str | None = None
    country: str | None = None
    expiry: int | None = None  # ns, futures and options
    approved: bool = True  # compliance has approved it for trading
    version: int = 0  # reference-data version; an update must carry a higher one


# --- market data ----------------------------------------------------------------------


class QuoteTick(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    instrument: str
    venue: str
    bid_price: int | None
    bid_size: int
    ask_price: int | None
    ask_size: int


class TradeTick(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    instrument: str
    venue: str
    price: int
    qty: int
    aggressor: Side | None = None
    trade_id: str | None = None


class BookDelta(Message, frozen=True, kw_only=True, gc=False):
    """One level of an L2 book: `qty` now rests at `price` on `side` (0 removes the level).

    `clear` starts a snapshot: drop both sides of the book, then apply this level; the
    snapshot's other levels follow at the same `ts_recv` with `clear` False.
    """

    ts_event: int | None = None
    instrument: str
    venue: str
    side: Side
    price: int
    qty: int
    clear: bool = False


# --- signals --------------------------------------------------------------------------


class Signal(Message, frozen=True, kw_only=True, gc=False):
    """A strategy's wish: an order intent (`side`, `qty`) or a target position."""

    ts_event: int | None = None
    signal_id: str
    strategy: str
    account: str
    instrument: str
    intent: SignalIntent = SignalIntent.ORDER
    side: Side | None = None
    qty: int = 0  # ORDER: quantity to trade, > 0
    target: int | None = None  # TARGET: signed position wanted
    order_type: OrderType = OrderType.MARKET
    price: int | None = None  # limit price
    stop_price: int | None = None
    tif: TimeInForce = TimeInForce.GTC
    signal_price: int | None = None  # the price the strategy saw; slippage reference
    venue: str | None = None
    cancels: str | None = None  # CANCEL: the signal_id whose open orders to cancel


# --- commands to venues (effects) -------------------------------------------------------


class SubmitOrder(Message, frozen=True, kw_only=True, gc=False):
    order_id: str
    venue: str
    instrument: str
    account: str
    strategy: str
    side: Side
    qty: int
    order_type: OrderType
    price: int | None = None
    stop_price: int | None = None
    tif: TimeInForce
    signal_id: str | None = None


class CancelOrder(Message, frozen=True, kw_only=True, gc=False):
    order_id: str
    venue: str
    instrument: str
    venue_order_id: str | None = None


class ReplaceOrder(Message, frozen=True, kw_only=True, gc=False):
    order_id: str
    venue: str
    instrument: str
    venue_order_id: str | None = None
    qty: int  # new total quantity
    price: int | None = None


# --- venue events (inputs) -----------------------------------------------------------------


class OrderAccepted(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    order_id: str
    venue: str
    venue_order_id: str | None = None


class OrderRejected(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    order_id: str
    venue: str
    reason: str
    retryable: bool = False


class OrderFilled(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    order_id: str
    venue: str
    trade_id: str
    price: int
    qty: int
    fee: int = 0  # notional units; negative is a rebate
    liquidity: Liquidity | None = None


class OrderCanceled(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    order_id: str
    venue: str
    reason: str | None = None


class CancelRejected(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    order_id: str
    venue: str
    reason: str


class OrderReplaced(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    order_id: str
    venue: str
    qty: int
    price: int | None = None
    venue_order_id: str | None = None


class ReplaceRejected(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    order_id: str
    venue: str
    reason: str


class OrderExpired(Message, frozen=True, kw_only=True, gc=False):
    ts_event: int | None = None
    order_id: str
    venue: str


class OrderStatusReport(Message, frozen=True, kw_only=True, gc=False):
    """The venue's view of one order, for reconciliation."""

    ts_event: int | None = None
    venue: str
    order_id: str | None = None
    venue_order_id: str | None = None
    instrument: str
    status: OrderStatus
    side: Side
    qty: int
    filled_qty: int
    avg_price: int | None = None


class PositionReport(Message, frozen=True, kw_only=True, gc=False):
    """The venue's view of one position (signed quantity), for reconciliation."""

    ts_event: int | None = None
    venue: str
    account: str
    instrument: str
    qty: int
    avg_price: int | None = None


# --- operator, timers, connectivity (inputs) --------------------------------------------


class KillSwitch(Message, frozen=True, kw_only=True, gc=False):
    """Put a scope into REDUCING or HALTED (halting cancels its working orders).

    `scope` is "*" (the firm), "account:A", "strategy:S" or "instrument:X".
    """

    operator: str
    reason: str
    flatten: bool = False
    scope: str = "*"
    state: TradingState = TradingState.HALTED


class Resume(Message, frozen=True, kw_only=True, gc=False):
    """Return a scope to ACTIVE."""

    operator: str
    reason: str
    scope: str = "*"


class ReviewDecision(Message, frozen=True, kw_only=True, gc=False):
    """An operator's verdict on a signal the gauntlet held for review."""

    operator: str
    signal_id: str
    approve: bool
    reason: str


class ReportsDone(Message, frozen=True, kw_only=True, gc=False):
    """The venue has sent every status and position report asked by `RequestReports`."""

    ts_event: int | None = None
    venue: str


class LimitOverride(Message, frozen=True, kw_only=True, gc=False):
    """Operator override of one limit at one scope, until `expires_at` (None: for good).

    `scope` is "*" (the firm), "account:A", "strategy:S", "instrument:X", "venue:V",
    or a bare instrument name (same as "instrument:X").
    """

    operator: str
    reason: str
    limit: str
    scope: str = "*"
    value: int
    expires_at: int | None = None


class TimerFired(Message, frozen=True, kw_only=True, gc=False):
    timer_id: str
    purpose: str
    order_id: str | None = None


class VenueConnected(Message, frozen=True, kw_only=True, gc=False):
    venue: str


class VenueDisconnected(Message, frozen=True, kw_only=True, gc=False):
    venue: str
    reason: str


# --- other effects ------------------------------------------------------------------------


class ScheduleTimer(Message, frozen=True, kw_only=True, gc=False):
    timer_id: str
    fire_at: int
    purpose: str
    order_id: str | None = None


class Alert(Message, frozen=True, kw_only=True, gc=False):
    severity: Severity
    code: str
    text: str
    order_id: str | None = None
    instrument: str | None = None
    venue: str | None = None


class SignalRejected(Message, frozen=True, kw_only=True, gc=False):
    """A signal denied before any order reached a venue; `code` names the check."""

    signal_id: str
    strategy: str
    account: str
    instrument: str
    code: str
    reason: str


class RequestReports(Message, frozen=True, kw_only=True, gc=False):
    """Ask a venue for its status report of every order of ours and its positions."""

    venue: str
    reason: str


class PositionAdjusted(Message, frozen=True, kw_only=True, gc=False):
    """A journaled correction of a position from reconciliation (`code` says which kind).

    `qty` is signed (buy > 0); `order_id` names the order a recovered fill belongs to.
    """

    account: str
    strategy: str
    instrument: str
    venue: str
    qty: int
    price: int
    code: str
    reason: str
    order_id: str | None = None


# Journal kind codes: index in this tuple. Append only.
KINDS: tuple[type[Message], ...] = (
    Instrument,
    QuoteTick,
    TradeTick,
    Signal,
    SubmitOrder,
    CancelOrder,
    ReplaceOrder,
    OrderAccepted,
    OrderRejected,
    OrderFilled,
    OrderCanceled,
    CancelRejected,
    OrderReplaced,
    ReplaceRejected,
    OrderExpired,
    OrderStatusReport,
    PositionReport,
    KillSwitch,
    Resume,
    LimitOverride,
    TimerFired,
    VenueConnected,
    VenueDisconnected,
    ScheduleTimer,
    Alert,
    SignalRejected,
    BookDelta,
    ReviewDecision,
    ReportsDone,
    RequestReports,
    PositionAdjusted,
)
KIND_CODE: dict[type[Message], int] = {cls: i for i, cls in enumerate(KINDS)}
KIND_BY_NAME: dict[str, type[Message]] = {cls.__name__: cls for cls in KINDS}

EFFECT_KINDS: tuple[type[Message], ...] = (
    SubmitOrder,
    CancelOrder,
    ReplaceOrder,
    ScheduleTimer,
    Alert,
    SignalRejected,
    RequestReports,
    PositionAdjusted,
)
VENUE_COMMANDS: tuple[type[Message], ...] = (SubmitOrder, CancelOrder, ReplaceOrder, RequestReports)
INPUT_KINDS: tuple[type[Message], ...] = tuple(k for k in KINDS if k not in EFFECT_KINDS)

VenueEvent = (
    OrderAccepted
    | OrderRejected
    | OrderFilled
    | OrderCanceled
    | CancelRejected
    | OrderReplaced
    | ReplaceRejected
    | OrderExpired
)
