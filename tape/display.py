"""Human-readable views of engine state: integers in instrument units shown as decimals."""

from __future__ import annotations

from decimal import Decimal

from rich.table import Table

from engine.core import Engine


def scaled(value: int | None, places: int) -> str:
    """Show an integer in units of 10^-places as a decimal string."""
    if value is None:
        return "-"
    return f"{Decimal(value).scaleb(-places):f}"


def positions_table(engine: Engine, title: str = "net positions per account") -> Table:
    """Tabulate every account's net position with average price, P&L and fees."""
    instruments = {i.instrument: i for i in engine.config.instruments}
    table = Table(title=title)
    for col in ("account", "instrument", "qty", "avg price", "realised", "unrealised", "fees"):
        table.add_column(col, justify="left" if col in ("account", "instrument") else "right")
    for (account, name), pos in engine.positions.net_positions():
        inst = instruments[name]
        pp, sp = inst.price_precision, inst.size_precision
        mark = engine.mark_price(name)
        unreal = pos.unrealised(mark) if mark is not None else None
        table.add_row(
            account,
            name,
            scaled(pos.qty, sp),
            scaled(pos.avg_price, pp),
            scaled(pos.realised, pp + sp),
            scaled(unreal, pp + sp),
            scaled(pos.fees, pp + sp),
        )
    return table
