"""Sim runs: a discrete-event loop over market data, signals, venue events and timers.

Invariants:
- Events are ordered by `(ts, kind priority, seq)`: at equal times venue events come
  first, then market data, then signals, then timers; `seq` (insertion order) breaks the
  remaining ties. Market rows keep their order in the data.
- Every input enters the journal before the engine sees it, exactly as in a live run,
  so a sim journal replays like a live one.
- Market data moves in Arrow batches. Rows that cannot change anything (no venue's
  `horizon` stops at them, and no signal, timer or venue event falls among them) cost
  no per-row Python: each market batch is turned once into journal columns
  (`codec.columns_rows`), runs of its rows are journaled as slices of them
  (`JournalWriter.append_rows`, constant work per run), each venue absorbs them
  (`skip`), and the engine is handed only the last quote and trade per (instrument,
  venue) of the run, plus every book level. The engine's contract (engine/core.py)
  makes that equal to handling every row; `fast=False` handles every row one by one,
  and the tests hold the two to the same journal entries.
- Stale quotes: a market row of a venue whose fault plan has a stale-quote window
  around its time is withheld from the engine, the journal and a per-tick strategy
  (a stale feed brings nothing new: the engine keeps the last quote from before the
  window, and a replay sees exactly what the engine saw); the venue itself still
  matches against it. The count is in the result (`withheld`).
- With a per-tick strategy, every quote row the engine gets is shown to it in order;
  the signals it returns enter at that row's time, after the market rows of the same
  time.
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
from typing import Any, Literal, Protocol, cast

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.codec import Rows, columns_rows, one_value
from engine.config import EngineConfig
from engine.core import Engine
from engine.fillmodel import FillModel, encode_model
from engine.journal import (
    DEFAULT_COMPRESSION,
    MANIFEST,
    Compression,
    FsyncPolicy,
    JournalWriter,
)
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
from engine.replay import FILL_MODEL_FILE
from engine.runner import Runner, new_manifest
from sim.config import SimResult, VenueConfig
from sim.market import MARKET_SCHEMA, MTYPE_BOOK, MTYPE_QUOTE, MTYPE_TRADE, NULL, MarketView
from sim.venue import SimVenue

PRIO_VENUE, PRIO_MARKET, PRIO_SIGNAL, PRIO_TIMER = 0, 1, 2, 3
# Journal groups of sim runs: market data comes in bulk, and a group's market rows are
# zero-copy slices of the input batch when they come from one batch, so a group ends with
# the market batch that brings it to SIM_GROUP_END entries (a batch of 65,536 quotes is one
# group: no gather across batches), and at SIM_GROUP_ROWS at the latest. Small batches
# share a group (a group costs a few ms of fixed work: a thread, metadata, a hash).
SIM_GROUP_ROWS = 131_072
SIM_GROUP_END = 32_768
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


def _encode(column: pa.Array) -> tuple[list[str], np.ndarray | None]:
    """Return a string column's distinct values and each row's index into them (None
    when every row holds the one value: no array of zeros to make and add)."""
    one = one_value(column)
    if one is not None:
        return [one], None
    encoded = pc.dictionary_encode(column)
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy().astype(np.int64)


class TickStrategy(Protocol):
    """A strategy shown every quote row the engine gets; it answers with signals (or
    nothing)."""

    def on_quote(
        self, ts: int, key: int, bid: int, bid_size: int, ask: int, ask_size: int
    ) -> Sequence[Signal] | None:
        """Look at one quote (`key` indexes `SimRun.keys`; a missing side is NULL)."""


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
        fill_model: FillModel | None = None,
    ) -> None:
        self.config = config
        self.engine = Engine(config, fill_model=fill_model)  # refuses a model not named
        self.venues = {v.name: SimVenue(v, config.instruments) for v in venues}
        self._venue_list = list(self.venues.values())
        manifest = new_manifest(
            config,
            mode=mode,
            sim={"venues": msgspec.to_builtins(venues)},
            fill_model_hash=config.fill_model_sha256,
        )
        run_dir = Path(journal_root) / config.run_id
        if (run_dir / MANIFEST).exists():
            # The simulated venues' books are not in the journal: a sim run cannot resume.
            raise ValueError(
                f"{run_dir}: run {config.run_id!r} exists already; a sim run starts a new "
                "run (choose another run id, or delete the old run)"
            )
        self.journal = JournalWriter(
            journal_root,
            manifest,
            fsync=fsync,
            compression=compression,
            batch_size=SIM_GROUP_ROWS,
        )
        if fill_model is not None:  # the run keeps the model its replay must load
            tmp = self.journal.run_dir / (FILL_MODEL_FILE + ".tmp")
            tmp.write_bytes(encode_model(fill_model))
            tmp.replace(self.journal.run_dir / FILL_MODEL_FILE)  # whole or absent
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
        # The current market batch: its rows as journal columns (made on first use), and
        # the rows withheld from the engine (None: none are).
        self._rows: Rows | None = None
        self._batch: pa.RecordBatch | None = None
        self._withheld: np.ndarray | None = None
        self._stale_venues = [v for v in self._venue_list if v.faults.stale_quotes]
        self._null_arrays: dict[tuple[int, int, type], np.ndarray] = {}
        self.market_rows = self.inputs = self.effects = self.signals = self.withheld = 0
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

    def _step_event(self, best: tuple[int, int] | None = None) -> None:
        """Process the earliest pending event (`best`: its (ts, priority) if known), a
        venue's own wake-up first at a tie."""
        if best is None:
            best = self._next_event()
        assert best is not None
        if best[1] == PRIO_VENUE:
            for venue in self._venue_list:
                if venue.wakeup_at() == best[0]:
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

    def _key_array(self, batch: pa.RecordBatch) -> tuple[np.ndarray, int]:
        """Number each row's (instrument, venue) with the run's key ids; return them and
        the one key of every row (-1 if the rows have more than one)."""
        inst_names, inst_codes = _encode(batch.column("instrument"))
        venue_names, venue_codes = _encode(batch.column("venue"))
        if inst_codes is None and venue_codes is None:  # one key (the common batch)
            key = self._key_id(inst_names[0], venue_names[0])
            return np.full(batch.num_rows, key, dtype=np.int32), key
        lookup = np.empty(len(inst_names) * len(venue_names), dtype=np.int32)
        for a, iname in enumerate(inst_names):
            for b, vname in enumerate(venue_names):
                lookup[a * len(venue_names) + b] = self._key_id(iname, vname)
        combined = (0 if inst_codes is None else inst_codes * len(venue_names)) + (
            0 if venue_codes is None else venue_codes
        )
        keys: np.ndarray = lookup[combined]
        return keys, int(keys[0]) if keys.min() == keys.max() else -1

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
        n = batch.num_rows

        def ints(name: str, null: int) -> np.ndarray:
            column = batch.column(name)
            if column.null_count == n:  # a column of other kinds' rows: shared, read-only
                return self._nulls(n, null)
            if column.null_count:
                column = pc.fill_null(column, null)
            values: np.ndarray = column.to_numpy()
            return values

        clear = batch.column("clear")
        key, single_key = self._key_array(batch)
        mtype = ints("mtype", -1)
        return MarketView(
            ts=ints("ts", NULL),
            mtype=mtype,
            key=key,
            bid_price=ints("bid_price", NULL),
            bid_size=ints("bid_size", NULL),
            ask_price=ints("ask_price", NULL),
            ask_size=ints("ask_size", NULL),
            price=ints("price", NULL),
            qty=ints("qty", NULL),
            side=ints("side", -1),
            clear=self._nulls(n, False)
            if clear.null_count == n
            else pc.fill_null(clear, False).to_numpy(zero_copy_only=False),
            ts_event=ints("ts_event", NULL),
            single_key=single_key,
            quotes_only=bool(mtype.min() == MTYPE_QUOTE == mtype.max()),
        )

    def _nulls(self, n: int, null: int | bool) -> np.ndarray:
        """A read-only array of `n` times `null` (int64, or bool for a bool `null`), kept
        for later batches."""
        key = (n, null, type(null))
        found = self._null_arrays.get(key)
        if found is None:
            if len(self._null_arrays) >= 8:
                self._null_arrays.clear()
            dtype = np.bool_ if type(null) is bool else np.int64
            found = self._null_arrays[key] = np.full(n, null, dtype=dtype)
            found.flags.writeable = False
        return found

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
        if self._withheld is not None and self._withheld[r]:
            self.withheld += 1
        else:
            self.inputs += 1
            self.runner.process_row(msg, self._batch_rows(view), r)
        venue = self._key_venue[int(view.key[r])]
        if venue is not None:
            self._push_venue(venue.on_market(msg))

    def _batch_rows(self, view: MarketView) -> Rows:
        """The current batch's rows as journal inputs, made on first use."""
        if self._rows is None:
            self._rows = self._journal_rows(cast(pa.RecordBatch, self._batch), view)
        return self._rows

    def _journal_rows(self, batch: pa.RecordBatch, view: MarketView) -> Rows:
        """The batch's rows as journal inputs: each row's own columns, the others null."""
        columns: dict[str, Any] = {
            "ts_recv": batch.column("ts"),
            "ts_event": batch.column("ts_event"),
            "instrument": batch.column("instrument"),
            "venue": batch.column("venue"),
        }
        mtype = batch.column("mtype")
        if view.quotes_only:
            for name in _QUOTE_COLUMNS:
                columns[name] = batch.column(name)
            kinds = np.full(len(view.mtype), _KIND_OF_MTYPE[MTYPE_QUOTE])
        else:
            kinds = _KIND_OF_MTYPE[view.mtype]
            is_quote = pc.equal(mtype, MTYPE_QUOTE)
            is_book = pc.equal(mtype, MTYPE_BOOK)
            for name in _QUOTE_COLUMNS:
                columns[name] = pc.if_else(is_quote, batch.column(name), None)
            not_quote = pc.invert(is_quote)
            columns["price"] = pc.if_else(not_quote, batch.column("price"), None)
            columns["qty"] = pc.if_else(not_quote, batch.column("qty"), None)
            side = batch.column("side")
            columns["aggressor"] = pc.if_else(pc.equal(mtype, MTYPE_TRADE), side, None)
            columns["side"] = pc.if_else(is_book, side, None)
            columns["clear"] = pc.if_else(is_book, pc.fill_null(batch.column("clear"), False), None)
        one_values = None
        if view.single_key >= 0:  # every row of one instrument and venue: say which
            instrument, venue = self.keys[view.single_key]
            one_values = {"instrument": instrument, "venue": venue}
        return columns_rows(kinds, columns, one_values)

    def _withheld_rows(self, view: MarketView) -> np.ndarray | None:
        """Mark the rows of venues in a stale-quote window (None if there is none)."""
        withheld: np.ndarray | None = None
        for venue in self._stale_venues:
            mine = np.array([v is venue for v in self._key_venue], dtype=bool)[view.key]
            if not mine.any():
                continue
            stale = mine & venue.stale_mask(view.ts)
            withheld = stale if withheld is None else withheld | stale
        return withheld if withheld is not None and withheld.any() else None

    def _bulk(self, view: MarketView, a: int, b: int) -> None:
        """Rows [a, b), none of which changes anything: journal, engine, venues in bulk."""
        journal_rows = self._batch_rows(view)
        withheld = self._withheld
        if withheld is None:
            self.journal.append_rows(journal_rows, a, b)
            self.inputs += b - a
            kept = None
        else:
            kept = np.flatnonzero(~withheld[a:b])
            if kept.size:
                # runs of consecutive kept rows, each journaled as one slice
                breaks = np.flatnonzero(np.diff(kept) != 1)
                starts = np.concatenate(([kept[0]], kept[breaks + 1])) + a
                stops = np.concatenate((kept[breaks], [kept[-1]])) + a + 1
                for start, stop in zip(starts.tolist(), stops.tolist()):
                    self.journal.append_rows(journal_rows, start, stop)
            self.inputs += kept.size
            self.withheld += b - a - kept.size
        # The engine: the last quote and trade per key, and every book level, in row order.
        if kept is None and view.single_key >= 0 and view.quotes_only:
            rows = [b - a - 1]
        else:
            keys = view.key[a:b]
            at = np.arange(b - a) if kept is None else kept
            sub = view.mtype[a:b][at]
            rows = _last_per_key(keys, at[sub == MTYPE_QUOTE])
            if not view.quotes_only:
                rows += _last_per_key(keys, at[sub == MTYPE_TRADE])
                rows += at[sub == MTYPE_BOOK].tolist()
            rows.sort()
        handle = self.engine.handle
        for r in rows:
            if handle(self._message(view, a + r)):
                raise RuntimeError(
                    "engine contract broken: market data produced effects in a bulk run"
                )
        for venue in self._venue_list:
            venue.skip(view, a, b)

    def _callbacks(self, cols: list[list[int]], start: int, stop: int) -> int:
        """Show quote rows [start, stop) to the strategy (but withheld ones: it sees the
        market the engine sees); return the row after the first that answered with
        signals (they are queued), else `stop`."""
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
        self._rows = None
        self._batch = batch
        self._withheld = self._withheld_rows(view) if self._stale_venues else None
        cols: list[list[int]] = []
        if self.strategy is not None:
            withheld = self._withheld
            shown = view.mtype if withheld is None else np.where(withheld, -1, view.mtype)
            cols = [
                a.tolist()
                for a in (
                    ts,
                    view.key,
                    shown,
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
                at = int(ts[i])
                if t < at or (t == at and prio < PRIO_MARKET):
                    j = i  # the event comes before row i (the common case: no search)
                else:
                    side: Literal["left", "right"] = "left" if prio < PRIO_MARKET else "right"
                    j = max(i, int(ts.searchsorted(t, side=side)))
            if cols and self._cb_row < j:
                j = self._callbacks(cols, max(self._cb_row, i), j)
                event = None  # the strategy's signals may come first now
            if j == i:
                self._step_event(event)
                continue
            if not self.fast:
                self._slow_row(view, i)
                i += 1
                continue
            h = j
            for venue in self._venue_list:
                h = venue.horizon(view, i, h)
            if h > i:
                self._bulk(view, i, h)
            if h < j:
                self._slow_row(view, h)
                i = h + 1
            else:
                i = j
        self._rows = None
        if self.journal.pending >= SIM_GROUP_END:
            self.journal.end_group()

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
            self._step_event(event)
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
            withheld=self.withheld,
            wall_s=time.perf_counter() - started,  # clock-ok: summary only
        )
