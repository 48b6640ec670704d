"""The summary of one run, computed from its sealed journal with Polars.

Invariants:
- The journal and its manifest are the only sources (the wall time of the run, which the
  journal does not hold, is passed in). Polars scans the sealed segments lazily: each is
  an IPC file of entries (`run_dir/NNNNNN.arrow`) and, if it journaled market data, one
  of market data (`run_dir/market/NNNNNN.arrow`, the narrow `MARKET_SCHEMA`). A segment
  with either file still open (`.arrows`: an unfinished run) is not read, and the
  summary says so (`complete` False).
- Quantities, fees and P&L are summed as integers in instrument or notional units and
  shown as `Decimal`s in human units (value / 10^precision, from the manifest's
  instruments). Floats appear only in ratios: fill rates, slippage in bps, events/s.
- Fills are booked the way the engine books them: to the order's account, strategy,
  instrument and side; a fill the engine answered with an UNKNOWN_ORDER or ORDER_ANOMALY
  alert (its `cause`) is left out, then a repeated (order_id, trade_id) is dropped. P&L
  replays those fills in `seq` order through `engine.positions.PositionBook`, the
  engine's own arithmetic, so realised P&L and fees equal the engine's to the unit.
- Unrealised P&L is marked like `Engine.mark_price`: the mid (rounded down) of the last
  two-sided quote of the instrument's default venue, else the last trade there; no mark,
  no unrealised P&L. Reference data changed mid-run (`Instrument` inputs) is not followed.
- Slippage of a fill is measured against its signal's `signal_price` (fill -> order ->
  `SubmitOrder.signal_id` -> the first `Signal` with that id), in bps of the signal
  price, signed so that positive is worse for us (paid more on a buy, got less on a
  sell). Per instrument it is weighted by quantity; across instruments by filled
  notional. Fills without a reference (no signal, no signal_price) are left out of it.
- Fill rate per instrument is filled qty / ordered qty (the qty each SubmitOrder asked
  for); across instruments only the share of orders with any fill is given.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
from rich.console import Group
from rich.table import Table
from rich.text import Text

from analytics.tca import scan_market
from engine.journal import read_manifest, sealed_segments
from engine.messages import Instrument, Side
from engine.positions import PositionBook

__all__ = [
    "AccountPnL",
    "InstrumentStats",
    "PositionLine",
    "RejectCount",
    "RunSummary",
    "render",
    "summarize",
]

_NOT_BOOKED = ("UNKNOWN_ORDER", "ORDER_ANOMALY")
_MARKET_KINDS = ("QuoteTick", "TradeTick", "BookDelta")


class InstrumentStats(msgspec.Struct, frozen=True, kw_only=True):
    """Orders, fills, fees and slippage of one instrument, in human units."""

    instrument: str
    currency: str
    orders: int
    ordered_qty: Decimal
    orders_filled: int  # orders with at least one fill
    fills: int
    filled_qty: Decimal
    fill_rate: float | None  # filled_qty / ordered_qty
    notional: Decimal  # sum of price x qty x multiplier of the fills, in currency
    fees: Decimal  # currency; negative: rebates exceed fees
    slippage_bps: float | None  # qty-weighted, positive = worse for us
    slippage_qty: Decimal  # the filled qty that has a reference price


class RejectCount(msgspec.Struct, frozen=True, kw_only=True):
    """How often one kind of reject happened: `code` is the check (SignalRejected) or the
    venue (OrderRejected); `example` is the first reason given."""

    kind: str
    code: str
    count: int
    example: str


class PositionLine(msgspec.Struct, frozen=True, kw_only=True):
    """One account's net position in one instrument at the end of the run."""

    account: str
    instrument: str
    currency: str
    qty: Decimal
    avg_price: Decimal | None
    mark: Decimal | None
    realised: Decimal
    unrealised: Decimal | None  # None: no mark price
    fees: Decimal


class AccountPnL(msgspec.Struct, frozen=True, kw_only=True):
    """One account's P&L in one currency: net = realised + unrealised - fees."""

    account: str
    currency: str
    realised: Decimal
    unrealised: Decimal
    fees: Decimal
    net: Decimal
    unmarked: int  # open positions without a mark price (their unrealised P&L is missing)


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What happened in a run, from its journal."""

    run_id: str
    mode: str
    status: str  # the manifest's: "closed" after a clean end
    complete: bool  # every segment sealed (nothing left unread)
    entries: int
    inputs: int
    effects: int
    first_ts: int | None
    last_ts: int | None
    market_rows: int
    signals: int
    orders: int
    orders_filled: int
    order_fill_share: float | None  # orders with any fill / orders
    fills: int  # booked fills
    cancels: int  # OrderCanceled
    signal_rejects: int
    order_rejects: int
    rejects: list[RejectCount]
    alerts: dict[str, int]  # by code
    slippage_bps: float | None  # notional-weighted over instruments
    fees: dict[str, Decimal]  # by currency
    instruments: list[InstrumentStats]
    positions: list[PositionLine]
    accounts: list[AccountPnL]
    wall_s: float | None
    events_per_s: float | None  # inputs / wall_s


def _human(value: int | None, places: int) -> Decimal | None:
    return None if value is None else Decimal(value).scaleb(-places)


def _dec(value: int, places: int) -> Decimal:
    return Decimal(value).scaleb(-places)


def _frames(entries: list[Path], market: list[Path]) -> dict[str, pl.DataFrame]:
    """Collect, in one pass over the sealed segments (their entries files and market-data
    files), the tables the summary needs."""
    lf = pl.scan_ipc(entries)
    kind = pl.col("kind").cast(pl.String)

    def everything(*cols: str) -> pl.LazyFrame:
        """The columns of every entry: market data (inputs without a cause) is in the
        market-data files, which have MARKET_SCHEMA's columns only (others are null)."""
        wide = lf.select(cols)
        if not market:
            return wide
        return pl.concat([wide, scan_market(market, wide.collect_schema())])

    # market-data kinds journaled with a cause are in the entries files: both are read
    quotes = everything("seq", "kind", "instrument", "venue", "bid_price", "ask_price")
    trades = everything("seq", "kind", "instrument", "venue", "price")
    queries: dict[str, pl.LazyFrame] = {
        "kinds": everything("kind", "cause", "ts_recv")
        .group_by(kind.alias("kind"))
        .agg(
            pl.len().alias("n"),
            pl.col("cause").is_null().sum().alias("inputs"),
            pl.col("ts_recv").min().alias("first_ts"),
            pl.col("ts_recv").max().alias("last_ts"),
        ),
        "orders": lf.filter(kind == "SubmitOrder").select(
            "seq",
            "order_id",
            "instrument",
            "account",
            "strategy",
            pl.col("side").cast(pl.String),
            "qty",
            "signal_id",
        ),
        "fills": lf.filter(kind == "OrderFilled").select(
            "seq", "order_id", "trade_id", "price", "qty", "fee"
        ),
        "signals": lf.filter(kind == "Signal").select("seq", "signal_id", "signal_price"),
        "alerts": lf.filter(kind == "Alert").select("cause", "code"),
        "signal_rejects": lf.filter(kind == "SignalRejected").select("seq", "code", "reason"),
        "order_rejects": lf.filter(kind == "OrderRejected").select("seq", "venue", "reason"),
        "quotes": quotes.filter(kind == "QuoteTick")
        .group_by("instrument", "venue")
        .agg(pl.col("bid_price", "ask_price").sort_by("seq").last()),
        "trades": trades.filter(kind == "TradeTick")
        .group_by("instrument", "venue")
        .agg(pl.col("price").sort_by("seq").last()),
    }
    names = list(queries)
    return dict(zip(names, pl.collect_all([queries[n] for n in names]), strict=True))


def _empty_frames() -> dict[str, pl.DataFrame]:
    s, i = pl.String, pl.Int64
    return {
        "kinds": pl.DataFrame(schema={"kind": s, "n": i, "inputs": i, "first_ts": i, "last_ts": i}),
        "orders": pl.DataFrame(
            schema={
                "seq": i,
                "order_id": s,
                "instrument": s,
                "account": s,
                "strategy": s,
                "side": s,
                "qty": i,
                "signal_id": s,
            }
        ),
        "fills": pl.DataFrame(
            schema={"seq": i, "order_id": s, "trade_id": s, "price": i, "qty": i, "fee": i}
        ),
        "signals": pl.DataFrame(schema={"seq": i, "signal_id": s, "signal_price": i}),
        "alerts": pl.DataFrame(schema={"cause": i, "code": s}),
        "signal_rejects": pl.DataFrame(schema={"seq": i, "code": s, "reason": s}),
        "order_rejects": pl.DataFrame(schema={"seq": i, "venue": s, "reason": s}),
        "quotes": pl.DataFrame(
            schema={"instrument": s, "venue": s, "bid_price": i, "ask_price": i}
        ),
        "trades": pl.DataFrame(schema={"instrument": s, "venue": s, "price": i}),
    }


def _booked_fills(f: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Return the fills the engine booked, joined to their orders, in seq order."""
    refused = (
        f["alerts"]
        .filter(pl.col("code").is_in(_NOT_BOOKED) & pl.col("cause").is_not_null())
        .select(pl.col("cause").cast(pl.Int64).alias("seq"))
    )
    orders = f["orders"].rename({"seq": "order_seq", "qty": "order_qty"})
    fills = (
        f["fills"]
        .with_columns(pl.col("seq").cast(pl.Int64))
        .join(refused, on="seq", how="anti")
        .sort("seq")
        .unique(subset=["order_id", "trade_id"], keep="first", maintain_order=True)
        .join(orders, on="order_id", how="inner")
        .sort("seq")
    )
    signals = (
        f["signals"]
        .sort("seq")
        .unique(subset=["signal_id"], keep="first", maintain_order=True)
        .select("signal_id", "signal_price")
    )
    return fills.join(signals, on="signal_id", how="left").sort("seq")


def summarize(run_dir: str | Path, *, wall_s: float | None = None) -> RunSummary:
    """Summarise a run from its journal (`wall_s`: the run's wall time, if known)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    instruments = {i.instrument: i for i in msgspec.convert(manifest.instruments, list[Instrument])}
    default_venue: dict[str, str] = dict(manifest.config.get("default_venue", {}))
    segments, complete = sealed_segments(run_dir)
    entries_files = [entries for entries, _ in segments]
    market_files = [market for _, market in segments if market is not None]
    f = _frames(entries_files, market_files) if entries_files else _empty_frames()

    kinds = {row["kind"]: row for row in f["kinds"].iter_rows(named=True)}
    count = {k: int(v["n"]) for k, v in kinds.items()}
    entries = sum(count.values())
    inputs = sum(int(v["inputs"]) for v in kinds.values())
    firsts = [v["first_ts"] for v in kinds.values() if v["first_ts"] is not None]
    lasts = [v["last_ts"] for v in kinds.values() if v["last_ts"] is not None]

    fills = _booked_fills(f)
    orders = f["orders"]
    stats, slip_num, slip_den, fees = _instrument_stats(orders, fills, instruments)
    positions, accounts = _pnl(fills, instruments, default_venue, f)
    filled_orders = fills["order_id"].n_unique() if fills.height else 0

    rejects = [
        RejectCount(kind="SignalRejected", code=r["code"], count=r["n"], example=r["reason"])
        for r in f["signal_rejects"]
        .sort("seq")
        .group_by("code", maintain_order=True)
        .agg(pl.len().alias("n"), pl.col("reason").first())
        .iter_rows(named=True)
    ]
    rejects += [
        RejectCount(kind="OrderRejected", code=r["venue"], count=r["n"], example=r["reason"])
        for r in f["order_rejects"]
        .sort("seq")
        .group_by("venue", maintain_order=True)
        .agg(pl.len().alias("n"), pl.col("reason").first())
        .iter_rows(named=True)
    ]
    alerts = {
        r["code"]: int(r["n"])
        for r in f["alerts"]
        .group_by("code")
        .agg(pl.len().alias("n"))
        .sort("code")
        .iter_rows(named=True)
    }
    return RunSummary(
        run_id=manifest.run_id,
        mode=manifest.mode,
        status=manifest.status,
        complete=complete,
        entries=entries,
        inputs=inputs,
        effects=entries - inputs,
        first_ts=min(firsts) if firsts else None,
        last_ts=max(lasts) if lasts else None,
        market_rows=sum(count.get(k, 0) for k in _MARKET_KINDS),
        signals=count.get("Signal", 0),
        orders=orders.height,
        orders_filled=filled_orders,
        order_fill_share=filled_orders / orders.height if orders.height else None,
        fills=fills.height,
        cancels=count.get("OrderCanceled", 0),
        signal_rejects=count.get("SignalRejected", 0),
        order_rejects=count.get("OrderRejected", 0),
        rejects=rejects,
        alerts=alerts,
        slippage_bps=slip_num / slip_den if slip_den else None,
        fees=fees,
        instruments=stats,
        positions=positions,
        accounts=accounts,
        wall_s=wall_s,
        events_per_s=inputs / wall_s if wall_s else None,
    )


def _instrument_stats(
    orders: pl.DataFrame, fills: pl.DataFrame, instruments: dict[str, Instrument]
) -> tuple[list[InstrumentStats], float, float, dict[str, Decimal]]:
    """Per instrument: orders, fills, fill rate, notional, fees and slippage."""
    by_order = orders.group_by("instrument").agg(
        pl.len().alias("orders"), pl.col("qty").sum().alias("ordered")
    )
    sign = pl.when(pl.col("side") == Side.BUY.value).then(1.0).otherwise(-1.0)
    ref = pl.col("signal_price").cast(pl.Float64)
    has_ref = pl.col("signal_price").is_not_null() & (pl.col("signal_price") > 0)
    bps = sign * (pl.col("price").cast(pl.Float64) - ref) / ref * 10_000.0
    by_fill = fills.group_by("instrument").agg(
        pl.len().alias("fills"),
        pl.col("order_id").n_unique().alias("orders_filled"),
        pl.col("qty").sum().alias("filled"),
        (pl.col("price") * pl.col("qty")).sum().alias("pq"),  # no multiplier yet
        pl.col("fee").sum().alias("fees"),
        pl.when(has_ref).then(bps * pl.col("qty")).otherwise(0.0).sum().alias("slip_qbps"),
        pl.when(has_ref).then(pl.col("qty")).otherwise(0).sum().alias("slip_qty"),
        pl.when(has_ref)
        .then(bps * (pl.col("price") * pl.col("qty")).cast(pl.Float64))
        .otherwise(0.0)
        .sum()
        .alias("slip_nbps"),
        pl.when(has_ref)
        .then((pl.col("price") * pl.col("qty")).cast(pl.Float64))
        .otherwise(0.0)
        .sum()
        .alias("slip_n"),
    )
    rows = by_order.join(by_fill, on="instrument", how="full", coalesce=True).sort("instrument")
    stats = []
    slip_num = slip_den = 0.0
    fees: dict[str, Decimal] = {}
    for r in rows.iter_rows(named=True):
        name = r["instrument"]
        inst = instruments.get(name)
        pp = inst.price_precision if inst else 0
        sp = inst.size_precision if inst else 0
        mult = inst.multiplier if inst else 1
        currency = inst.currency if inst else "?"
        ordered, filled = r["ordered"] or 0, r["filled"] or 0
        fee = _dec(r["fees"] or 0, pp + sp)
        fees[currency] = fees.get(currency, Decimal(0)) + fee
        slip_qty = r["slip_qty"] or 0
        # notional-weighted across instruments: weights in currency, not price units
        weight = (r["slip_n"] or 0.0) * mult / 10 ** (pp + sp)
        if slip_qty:
            slip_num += (r["slip_nbps"] or 0.0) * mult / 10 ** (pp + sp)
            slip_den += weight
        stats.append(
            InstrumentStats(
                instrument=name,
                currency=currency,
                orders=r["orders"] or 0,
                ordered_qty=_dec(ordered, sp),
                orders_filled=r["orders_filled"] or 0,
                fills=r["fills"] or 0,
                filled_qty=_dec(filled, sp),
                fill_rate=filled / ordered if ordered else None,
                notional=_dec((r["pq"] or 0) * mult, pp + sp),
                fees=fee,
                slippage_bps=(r["slip_qbps"] or 0.0) / slip_qty if slip_qty else None,
                slippage_qty=_dec(slip_qty, sp),
            )
        )
    return stats, slip_num, slip_den, dict(sorted(fees.items()))


def _pnl(
    fills: pl.DataFrame,
    instruments: dict[str, Instrument],
    default_venue: dict[str, str],
    f: dict[str, pl.DataFrame],
) -> tuple[list[PositionLine], list[AccountPnL]]:
    """Replay the booked fills through the engine's position arithmetic; mark at the end."""
    book = PositionBook()
    for account, strategy, name, side, qty, price, fee in fills.select(
        "account", "strategy", "instrument", "side", "qty", "price", "fee"
    ).iter_rows():
        inst = instruments.get(name)
        book.apply_fill(
            account,
            strategy,
            name,
            side=Side(side),
            qty=qty,
            price=price,
            fee=fee,
            multiplier=inst.multiplier if inst else 1,
        )
    quotes = {(r[0], r[1]): (r[2], r[3]) for r in f["quotes"].iter_rows()}
    trades = {(r[0], r[1]): r[2] for r in f["trades"].iter_rows()}

    def mark(name: str) -> int | None:
        inst = instruments.get(name)
        venue = default_venue.get(name) or (next(iter(inst.venue_symbols), None) if inst else None)
        if venue is None:
            return None
        quote = quotes.get((name, venue))
        if quote is not None and quote[0] is not None and quote[1] is not None:
            return int((quote[0] + quote[1]) // 2)
        return trades.get((name, venue))

    lines: list[PositionLine] = []
    sums: dict[tuple[str, str], list[Decimal]] = {}  # realised, unrealised, fees
    unmarked: dict[tuple[str, str], int] = {}
    for (account, name), pos in book.net_positions():
        inst = instruments.get(name)
        pp = inst.price_precision if inst else 0
        sp = inst.size_precision if inst else 0
        currency = inst.currency if inst else "?"
        m = mark(name)
        unreal = pos.unrealised(m) if m is not None else (0 if pos.qty == 0 else None)
        line = PositionLine(
            account=account,
            instrument=name,
            currency=currency,
            qty=_dec(pos.qty, sp),
            avg_price=_human(pos.avg_price, pp),
            mark=_human(m, pp),
            realised=_dec(pos.realised, pp + sp),
            unrealised=_human(unreal, pp + sp),
            fees=_dec(pos.fees, pp + sp),
        )
        lines.append(line)
        key = (account, currency)
        total = sums.setdefault(key, [Decimal(0)] * 3)
        total[0] += line.realised
        total[1] += line.unrealised or 0
        total[2] += line.fees
        unmarked[key] = unmarked.get(key, 0) + (line.unrealised is None)
    accounts = [
        AccountPnL(
            account=account,
            currency=currency,
            realised=v[0],
            unrealised=v[1],
            fees=v[2],
            net=v[0] + v[1] - v[2],
            unmarked=unmarked[account, currency],
        )
        for (account, currency), v in sorted(sums.items())
    ]
    lines.sort(key=lambda p: (p.account, p.instrument))
    return lines, accounts


# --- display ----------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: Decimal | None) -> str:
    if x is None:
        return "-"
    return f"{x.normalize():,f}" if x == x.to_integral_value() else f"{x:,f}"


def _money(x: Decimal | None) -> str:
    return "-" if x is None else f"{x:,f}"


def render(summary: RunSummary) -> Any:
    """Return a rich renderable of the summary: headline, instruments, rejects, P&L."""
    s = summary
    lines = [
        f"run {s.run_id} ({s.mode}, {s.status}"
        + ("" if s.complete else ", UNSEALED SEGMENTS NOT READ")
        + f"): {s.entries:,} entries ({s.inputs:,} inputs, {s.effects:,} effects)",
        f"market rows {s.market_rows:,}  signals {s.signals:,}  orders {s.orders:,}  "
        f"fills {s.fills:,}  cancels {s.cancels:,}  rejects {s.signal_rejects:,} signal / "
        f"{s.order_rejects:,} order",
        f"orders with a fill {s.orders_filled:,} of {s.orders:,} ({_pct(s.order_fill_share)})  "
        f"slippage {'-' if s.slippage_bps is None else f'{s.slippage_bps:+.2f} bps'} "
        "(vs signal_price, + = worse, notional-weighted)  fees "
        + (", ".join(f"{_money(v)} {c}" for c, v in s.fees.items()) or "0"),
    ]
    if s.wall_s is not None:
        rate = f" ({s.events_per_s:,.0f} events/s)" if s.events_per_s is not None else ""
        lines.append(f"wall time {s.wall_s:.2f} s{rate}")
    if s.alerts:
        lines.append("alerts " + ", ".join(f"{k} {v:,}" for k, v in s.alerts.items()))
    parts: list[Any] = [Text("\n".join(lines))]

    if s.instruments:
        t = Table(title="orders and fills by instrument")
        for col in (
            "instrument",
            "orders",
            "ordered qty",
            "filled qty",
            "fill rate",
            "fills",
            "notional",
            "fees",
            "slippage bps",
        ):
            t.add_column(col, justify="left" if col == "instrument" else "right")
        for i in s.instruments:
            t.add_row(
                i.instrument,
                f"{i.orders:,}",
                _num(i.ordered_qty),
                _num(i.filled_qty),
                _pct(i.fill_rate),
                f"{i.fills:,}",
                f"{_money(i.notional)} {i.currency}",
                _money(i.fees),
                "-" if i.slippage_bps is None else f"{i.slippage_bps:+.3f}",
            )
        parts.append(t)
    if s.rejects:
        t = Table(title="rejects")
        for col in ("kind", "code / venue", "count", "first reason"):
            t.add_column(col, justify="right" if col == "count" else "left")
        for r in s.rejects:
            t.add_row(r.kind, r.code, f"{r.count:,}", r.example)
        parts.append(t)
    if s.positions:
        t = Table(title="net positions per account")
        for col in (
            "account",
            "instrument",
            "qty",
            "avg price",
            "mark",
            "realised",
            "unrealised",
            "fees",
        ):
            t.add_column(col, justify="left" if col in ("account", "instrument") else "right")
        for p in s.positions:
            t.add_row(
                p.account,
                p.instrument,
                _num(p.qty),
                _num(p.avg_price),
                _num(p.mark),
                _money(p.realised),
                _money(p.unrealised),
                _money(p.fees),
            )
        parts.append(t)
    if s.accounts:
        t = Table(title="P&L per account (net = realised + unrealised - fees)")
        for col in ("account", "currency", "realised", "unrealised", "fees", "net"):
            t.add_column(col, justify="left" if col in ("account", "currency") else "right")
        for a in s.accounts:
            unreal = _money(a.unrealised) + (f" ({a.unmarked} unmarked)" if a.unmarked else "")
            t.add_row(
                a.account, a.currency, _money(a.realised), unreal, _money(a.fees), _money(a.net)
            )
        parts.append(t)
    return Group(*parts)
