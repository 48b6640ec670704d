"""Sim runs: a discrete-event loop over market data, signals, venue events and timers.

Invariants:
- Events are ordered by `(ts, kind priority, seq)`: at equal times venue events come
  first, then market data, then signals, then timers; `seq` (insertion order) breaks the
  remaining ties. Market rows keep their order in the data.
- Every input enters the journal before the engine sees it, exactly as in a live run,
  so a sim journal replays like a live one.
- Market data moves in Arrow batches. Rows that cannot change anything (no venue's
  `horizon` stops at them, and no signal, timer or venue event falls among them) cost
  no per-row Python: they are journaled in bulk (`JournalWriter.append_columns`), each
  venue absorbs them (`skip`), and the engine is handed only the last quote and trade
  per (instrument, venue) of the run, plus every book level. The engine's contract
  (engine/core.py) makes that equal to handling every row; `fast=False` handles every
  row one by one, and the tests hold the two to the same journal entries.
- With a per-tick strategy, every quote row is shown to it in order; the signals it
  returns enter at that row's time, after the market rows of the same time.
- Venue commands go to the simulated venue, whose responses come back as events at
  their delivery time; `ScheduleTimer` effects come back as `TimerFired` at `fire_at`.
  After the last market row, events are processed up to `drain_ns` later; the rest are
  left undone (their count is in the result).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.core import Engine, EngineConfig
from engine.journal import DEFAULT_COMPRESSION, Compression, FsyncPolicy, JournalWriter
from engine.messages import (
    KIND_CODE,
    VENUE_COMMANDS,
    Alert,
    BookDelta,
    CancelOrder,
    CancelRejected,
    Message,
    OrderFilled,
    OrderRejected,
    QuoteTick,
    ReplaceOrder,
    ReplaceRejected,
    ScheduleTimer,
    Side,
    Signal,
    SubmitOrder,
    TimerFired,
    TradeTick,
)
from engine.runner import Runner, new_manifest
from sim.market import MARKET_SCHEMA, MTYPE_BOOK, MTYPE_QUOTE, MTYPE_TRADE, NULL, MarketView
from sim.venue import SimVenue, VenueConfig

PRIO_VENUE, PRIO_MARKET, PRIO_SIGNAL, PRIO_TIMER = 0, 1, 2, 3
SIM_BATCH_ROWS = 65_536  # journal batch size of sim runs: market data comes in bulk
_KIND_OF_MTYPE = np.array(
    [KIND_CODE[QuoteTick], KIND_CODE[TradeTick], KIND_CODE[BookDelta]], dtype=np.int8
)
_QUOTE_COLUMNS = ("bid_price", "bid_size", "ask_price", "ask_size")
_SIDES = (Side.BUY, Side.SELL)


def _last_per_key(keys: np.ndarray, at: np.ndarray) -> list[int]:
    """Return, of the rows `at`, the last one of each key."""
    if len(at) == 0:
        return []
    _, first_from_end = np.unique(keys[at][::-1], return_index=True)
    last: list[int] = at[len(at) - 1 - first_from_end].tolist()
    return last


class TickStrategy(Protocol):
    """A strategy shown every quote row; it answers with signals (or nothing)."""

    def on_quote(
        self, ts: int, key: int, bid: int, bid_size: int, ask: int, ask_size: int
    ) -> Sequence[Signal] | None:
        """Look at one quote (`key` indexes `SimRun.keys`; a missing side is NULL)."""


class SimResult(msgspec.Struct, kw_only=True):
    run_id: str
    run_dir: str
    market_rows: int
    inputs: int
    effects: int
    signals: int
    orders: int
    fills: int
    cancels: int
    alerts: int
    undone: int  # events after the drain horizon, never processed
    wall_s: float


class SimRun:
    """Wire engine, journal and simulated venues; run a market and signals to the end."""

    def __init__(
        self,
        config: EngineConfig,
        venues: tuple[VenueConfig, ...],
        journal_root: Path,
        *,
        mode: str = "sim",
        fsync: FsyncPolicy = "none",
        compression: Compression = DEFAULT_COMPRESSION,
        strategy: TickStrategy | None = None,
        fast: bool = True,
        drain_ns: int = 60_000_000_000,
    ) -> None:
        self.config = config
        self.engine = Engine(config)
        self.venues = {v.name: SimVenue(v, config.instruments) for v in venues}
        self._venue_list = list(self.venues.values())
        manifest = new_manifest(config, mode=mode, sim={"venues": msgspec.to_builtins(venues)})
        self.journal = JournalWriter(
            journal_root,
            manifest,
            fsync=fsync,
            compression=compression,
            batch_size=SIM_BATCH_ROWS,
        )
        self.runner = Runner(self.engine, self.journal, self._dispatch)
        self.strategy = strategy
        self.fast = fast
        self.drain_ns = drain_ns
        self.keys: list[tuple[str, str]] = []  # (instrument, venue) of each key id
        self._key_ids: dict[tuple[str, str], int] = {}
        self._key_venue: list[SimVenue | None] = []
        self._heap: list[tuple[int, int, int, Message]] = []
        self._seq = 0
        self._now = 0
        self._cb_row = 0  # callbacks done for rows < this one, in the current batch
        self.market_rows = self.inputs = self.effects = self.signals = 0
        self.orders = self.fills = self.cancels = self.alerts = 0

    # --- events -------------------------------------------------------------------------

    def _push(self, ts: int, prio: int, msg: Message) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, prio, self._seq, msg))

    def _push_venue(self, msgs: Iterable[Message]) -> None:
        for msg in msgs:
            self._push(msg.ts_recv, PRIO_VENUE, msg)

    def _next_event(self) -> tuple[int, int] | None:
        """Return (ts, priority) of the earliest pending event, None if there is none."""
        best: tuple[int, int] | None = None
        if self._heap:
            best = (self._heap[0][0], self._heap[0][1])
        for venue in self._venue_list:
            at = venue.wakeup_at()
            if at is not None and (best is None or (at, PRIO_VENUE) < best):
                best = (at, PRIO_VENUE)
        return best

    def _step_event(self) -> None:
        """Process the earliest pending event: a venue's own wake-up first at a tie."""
        best = self._next_event()
        assert best is not None
        for venue in self._venue_list:
            if venue.wakeup_at() == best[0] and best[1] == PRIO_VENUE:
                self._now = best[0]
                self._push_venue(venue.on_wakeup(best[0]))
                return
        self._process(heapq.heappop(self._heap)[3])

    def _process(self, msg: Message) -> None:
        self._now = msg.ts_recv
        self.inputs += 1
        kind = type(msg)
        if kind is OrderFilled:
            self.fills += 1
        elif kind is Signal:
            self.signals += 1
        self.runner.process(msg)

    def _dispatch(self, effect: Message) -> None:
        self.effects += 1
        kind = type(effect)
        if kind is ScheduleTimer:
            fired = TimerFired(
                ts_recv=effect.fire_at,  # type: ignore[attr-defined]
                timer_id=effect.timer_id,  # type: ignore[attr-defined]
                purpose=effect.purpose,  # type: ignore[attr-defined]
                order_id=effect.order_id,  # type: ignore[attr-defined]
            )
            self._push(fired.ts_recv, PRIO_TIMER, fired)
        elif kind is Alert:
            self.alerts += 1
        elif kind in VENUE_COMMANDS:
            self._to_venue(effect)

    def _to_venue(self, cmd: Any) -> None:
        if type(cmd) is SubmitOrder:
            self.orders += 1
        elif type(cmd) is CancelOrder:
            self.cancels += 1
        venue = self.venues.get(cmd.venue)
        if venue is not None:
            self._push_venue(venue.on_command(cmd, self._now))
            return
        # No such venue in this sim: answer as a venue gateway would, never silently.
        reason = f"venue {cmd.venue} is not simulated in this run"
        ts = self._now
        common = {"ts_recv": ts, "order_id": cmd.order_id, "venue": cmd.venue, "reason": reason}
        if type(cmd) is SubmitOrder:
            self._push(ts, PRIO_VENUE, OrderRejected(**common))
        elif type(cmd) is CancelOrder:
            self._push(ts, PRIO_VENUE, CancelRejected(**common))
        elif type(cmd) is ReplaceOrder:
            self._push(ts, PRIO_VENUE, ReplaceRejected(**common))

    # --- market data --------------------------------------------------------------------

    def _key_array(self, batch: pa.RecordBatch) -> np.ndarray:
        """Number each row's (instrument, venue) with the run's key ids."""
        inst = pc.dictionary_encode(batch.column("instrument"))
        venue = pc.dictionary_encode(batch.column("venue"))
        inst_names = inst.dictionary.to_pylist()
        venue_names = venue.dictionary.to_pylist()
        lookup = np.empty(len(inst_names) * len(venue_names), dtype=np.int32)
        for a, iname in enumerate(inst_names):
            for b, vname in enumerate(venue_names):
                lookup[a * len(venue_names) + b] = self._key_id(iname, vname)
        combined = inst.indices.to_numpy() * len(venue_names) + venue.indices.to_numpy()
        keys: np.ndarray = lookup[combined]
        return keys

    def _key_id(self, instrument: str, venue: str) -> int:
        pair = (instrument, venue)
        key = self._key_ids.get(pair)
        if key is None:
            key = self._key_ids[pair] = len(self.keys)
            self.keys.append(pair)
            self._key_venue.append(self.venues.get(venue))
            for sim_venue in self._venue_list:
                sim_venue.bind_keys(self.keys)
        return key

    def _view(self, batch: pa.RecordBatch) -> MarketView:
        def ints(name: str, null: int) -> np.ndarray:
            column = batch.column(name)
            if column.null_count:
                column = pc.fill_null(column, null)
            values: np.ndarray = column.to_numpy()
            return values

        return MarketView(
            ts=ints("ts", NULL),
            mtype=ints("mtype", -1),
            key=self._key_array(batch),
            bid_price=ints("bid_price", NULL),
            bid_size=ints("bid_size", NULL),
            ask_price=ints("ask_price", NULL),
            ask_size=ints("ask_size", NULL),
            price=ints("price", NULL),
            qty=ints("qty", NULL),
            side=ints("side", -1),
            clear=pc.fill_null(batch.column("clear"), False).to_numpy(zero_copy_only=False),
            ts_event=ints("ts_event", NULL),
        )

    def _message(self, view: MarketView, r: int) -> QuoteTick | TradeTick | BookDelta:
        """Build the message of one market row."""
        instrument, venue = self.keys[int(view.key[r])]
        ts = int(view.ts[r])
        ts_event = None if view.ts_event[r] == NULL else int(view.ts_event[r])
        mtype = view.mtype[r]
        if mtype == MTYPE_QUOTE:
            return QuoteTick(
                ts_recv=ts,
                ts_event=ts_event,
                instrument=instrument,
                venue=venue,
                bid_price=None if view.bid_price[r] == NULL else int(view.bid_price[r]),
                bid_size=int(view.bid_size[r]),
                ask_price=None if view.ask_price[r] == NULL else int(view.ask_price[r]),
                ask_size=int(view.ask_size[r]),
            )
        if mtype == MTYPE_TRADE:
            side = int(view.side[r])
            return TradeTick(
                ts_recv=ts,
                ts_event=ts_event,
                instrument=instrument,
                venue=venue,
                price=int(view.price[r]),
                qty=int(view.qty[r]),
                aggressor=_SIDES[side] if side >= 0 else None,
            )
        return BookDelta(
            ts_recv=ts,
            ts_event=ts_event,
            instrument=instrument,
            venue=venue,
            side=_SIDES[int(view.side[r])],
            price=int(view.price[r]),
            qty=int(view.qty[r]),
            clear=bool(view.clear[r]),
        )

    def _slow_row(self, view: MarketView, r: int) -> None:
        """One market row through the journal, the engine and its venue."""
        msg = self._message(view, r)
        self._now = msg.ts_recv
        self.inputs += 1
        self.runner.process(msg)
        venue = self._key_venue[int(view.key[r])]
        if venue is not None:
            self._push_venue(venue.on_market(msg))

    def _bulk(self, batch: pa.RecordBatch, view: MarketView, a: int, b: int) -> None:
        """Rows [a, b), none of which changes anything: journal, engine, venues in bulk."""
        n = b - a
        part = batch.slice(a, n)
        mtype = view.mtype[a:b]
        only_quotes = bool((mtype == MTYPE_QUOTE).all())
        columns: dict[str, Any] = {
            "ts_recv": part.column("ts"),
            "ts_event": part.column("ts_event"),
            "instrument": part.column("instrument"),
            "venue": part.column("venue"),
        }
        for name in _QUOTE_COLUMNS:
            columns[name] = part.column(name)
        if not only_quotes:
            side = part.column("side")
            columns["price"] = part.column("price")
            columns["qty"] = part.column("qty")
            columns["aggressor"] = pc.if_else(
                pc.equal(part.column("mtype"), MTYPE_TRADE), side, None
            )
            is_book = pc.equal(part.column("mtype"), MTYPE_BOOK)
            columns["side"] = pc.if_else(is_book, side, None)
            columns["clear"] = pc.if_else(is_book, pc.fill_null(part.column("clear"), False), None)
        self.journal.append_columns(_KIND_OF_MTYPE[mtype], columns)
        self.inputs += n
        # The engine: the last quote and trade per key, and every book level, in row order.
        keys = view.key[a:b]
        if only_quotes:
            rows = _last_per_key(keys, np.arange(n))
        else:
            rows = _last_per_key(keys, np.flatnonzero(mtype == MTYPE_QUOTE))
            rows += _last_per_key(keys, np.flatnonzero(mtype == MTYPE_TRADE))
            rows += np.flatnonzero(mtype == MTYPE_BOOK).tolist()
        handle = self.engine.handle
        for r in sorted(rows):
            if handle(self._message(view, a + r)):
                raise RuntimeError(
                    "engine contract broken: market data produced effects in a bulk run"
                )
        for venue in self._venue_list:
            venue.skip(view, a, b)

    def _callbacks(self, cols: list[list[int]], start: int, stop: int) -> int:
        """Show quote rows [start, stop) to the strategy; return the row after the first
        that answered with signals (they are queued), else `stop`."""
        strategy = self.strategy
        assert strategy is not None
        ts, key, mtype, bid, bid_size, ask, ask_size = cols
        for r in range(start, stop):
            if mtype[r] != MTYPE_QUOTE:
                continue
            signals = strategy.on_quote(ts[r], key[r], bid[r], bid_size[r], ask[r], ask_size[r])
            if signals:
                for sig in signals:
                    self._push(sig.ts_recv, PRIO_SIGNAL, sig)
                self._cb_row = r + 1
                return r + 1
        self._cb_row = stop
        return stop

    def _run_batch(self, batch: pa.RecordBatch) -> None:
        view = self._view(batch)
        ts = view.ts
        n = len(ts)
        cols: list[list[int]] = []
        if self.strategy is not None:
            cols = [
                a.tolist()
                for a in (
                    ts,
                    view.key,
                    view.mtype,
                    view.bid_price,
                    view.bid_size,
                    view.ask_price,
                    view.ask_size,
                )
            ]
        self._cb_row = 0
        i = 0
        while i < n:
            event = self._next_event()
            if event is None:
                j = n
            else:
                t, prio = event
                side = "left" if prio < PRIO_MARKET else "right"
                j = max(i, int(np.searchsorted(ts, t, side=side)))
            if cols and self._cb_row < j:
                j = self._callbacks(cols, max(self._cb_row, i), j)
            if j == i:
                self._step_event()
                continue
            if not self.fast:
                self._slow_row(view, i)
                i += 1
                continue
            h = j
            for venue in self._venue_list:
                h = venue.horizon(view, i, h)
            if h > i:
                self._bulk(batch, view, i, h)
            if h < j:
                self._slow_row(view, h)
                i = h + 1
            else:
                i = j

    def run(
        self,
        market: pa.Table | Iterable[pa.RecordBatch],
        signals: Iterable[Signal],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> SimResult:
        """Run every market row and signal (and all they cause) through the engine."""
        started = time.perf_counter()  # clock-ok: wall time of the run, for the summary only
        for sig in signals:
            self._push(sig.ts_recv, PRIO_SIGNAL, sig)
        batches = market.to_batches() if isinstance(market, pa.Table) else market
        last_ts: int | None = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if not batch.schema.equals(MARKET_SCHEMA):
                raise ValueError(
                    "market batch: schema differs from sim.market.MARKET_SCHEMA "
                    f"(got {batch.schema.names})"
                )
            self._run_batch(batch)
            self.market_rows += batch.num_rows
            last_ts = batch.column("ts")[-1].as_py()
            if progress is not None:
                progress(self.market_rows)
        end = (last_ts if last_ts is not None else self._now) + self.drain_ns
        while True:
            event = self._next_event()
            if event is None or event[0] > end:
                break
            self._step_event()
        undone = len(self._heap)
        self.runner.close()
        return SimResult(
            run_id=self.config.run_id,
            run_dir=str(self.journal.run_dir),
            market_rows=self.market_rows,
            inputs=self.inputs,
            effects=self.effects,
            signals=self.signals,
            orders=self.orders,
            fills=self.fills,
            cancels=self.cancels,
            alerts=self.alerts,
            undone=undone,
            wall_s=time.perf_counter() - started,  # clock-ok: summary only
        )
