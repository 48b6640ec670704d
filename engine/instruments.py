"""Reference-data arithmetic: ticks, lots, notional, and order normalisation.

Invariants:
- Prices and quantities are ints in instrument units. Notional is price x qty x
  multiplier, in notional units (price units x size units). No floats.
- Rounding never makes an order worse than asked: a buy price rounds down to the tick,
  a sell price rounds up. Stop prices round the same way, so a stop triggers no later
  than asked. Quantities round down to the lot: never more than asked.
- Functions are pure: a rule an order breaks comes back as a `Denial`, never an
  exception. Reasons name the field, the value and what was expected.
"""

from __future__ import annotations

import msgspec

from engine.messages import Instrument, QuoteTick, Side

# (qty, price, stop_price) of an order that passed normalisation.
Normalised = tuple[int, int | None, int | None]


class Denial(msgspec.Struct, frozen=True, kw_only=True):
    """Why an order may not be sent: `code` names the check, `reason` explains."""

    code: str
    reason: str


def instrument_problem(inst: Instrument) -> str | None:
    """Return what makes an instrument's reference data unusable, or None."""
    for field, value, least in (
        ("tick_size", inst.tick_size, 1),
        ("lot_size", inst.lot_size, 1),
        ("multiplier", inst.multiplier, 1),
        ("min_qty", inst.min_qty, 0),
        ("min_notional", inst.min_notional, 0),
    ):
        if value < least:
            return f"instrument {inst.instrument}: {field} must be >= {least}, got {value}"
    return None


def round_price(price: int, side: Side, inst: Instrument) -> int:
    """Round a limit or stop price to the tick: down for a buy, up for a sell."""
    tick = inst.tick_size
    if side is Side.BUY:
        return price // tick * tick
    return -(-price // tick) * tick


def round_qty(qty: int, inst: Instrument) -> int:
    """Round a quantity down to the lot size."""
    return qty // inst.lot_size * inst.lot_size


def notional(price: int, qty: int, inst: Instrument) -> int:
    """Return price x qty x multiplier, in notional units."""
    return price * qty * inst.multiplier


def normalise_order(
    inst: Instrument,
    *,
    side: Side,
    qty: int,
    price: int | None,
    stop_price: int | None,
    signal_price: int | None = None,
    quote: QuoteTick | None = None,
) -> Normalised | Denial:
    """Round an order to the instrument's grid and check its min qty and min notional."""
    name = inst.instrument
    lots = round_qty(qty, inst)
    if lots <= 0:
        return Denial(
            code="lot_size",
            reason=f"qty {qty} rounds to 0 at lot_size {inst.lot_size} for {name}: "
            f"expected at least {inst.lot_size}",
        )
    if lots < inst.min_qty:
        shown = f"{qty}" if lots == qty else f"{qty} (rounded to lot_size {inst.lot_size}: {lots})"
        return Denial(code="min_qty", reason=f"qty {shown} below min_qty {inst.min_qty} for {name}")
    if price is not None:
        price = round_price(price, side, inst)
    if stop_price is not None:
        stop_price = round_price(stop_price, side, inst)
    if inst.min_notional > 0:
        ref, source = _reference_price(side, price, signal_price, quote)
        if ref is None:
            return Denial(
                code="min_notional",
                reason=f"min_notional {inst.min_notional} for {name} needs a reference price: "
                "expected a limit price, a signal_price or a quote on the far side, got none",
            )
        value = abs(notional(ref, lots, inst))
        if value < inst.min_notional:
            return Denial(
                code="min_notional",
                reason=f"notional {value} (qty {lots} x {source} {ref} x multiplier "
                f"{inst.multiplier}) below min_notional {inst.min_notional} for {name}",
            )
    return lots, price, stop_price


def _reference_price(
    side: Side, price: int | None, signal_price: int | None, quote: QuoteTick | None
) -> tuple[int | None, str]:
    """Pick the price to value an order at: limit, else signal, else the quote's far side."""
    if price is not None:
        return price, "limit price"
    if signal_price is not None:
        return signal_price, "signal_price"
    if quote is None:
        return None, ""
    if side is Side.BUY:
        return quote.ask_price, "ask"
    return quote.bid_price, "bid"
