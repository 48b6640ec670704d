"""`tape limits RUN`: the limits a run traded under, the operators' overrides, and usage.

Invariants:
- Read-only: the run is replayed (not verified) into a fresh engine, whose final state
  gives the usage; nothing is written.
- The audit trail is the journal itself: every operator input (limit overrides, kill
  switches, resumes, review decisions) is listed in `seq` order with who and why.
- Usage is the engine's own worst-case figure (position plus working orders), the one its
  checks compare with the limit, at the run's last timestamp.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from engine.codec import KIND_DICTIONARY, decode_messages
from engine.config import LIMIT_NAMES, LimitSet
from engine.core import Engine
from engine.journal import JournalReader
from engine.messages import KillSwitch, LimitOverride, Message, Resume, ReviewDecision
from engine.replay import replay
from engine.risk import scope_of

_OPERATOR_KINDS = (LimitOverride, KillSwitch, Resume, ReviewDecision)


def add_limits_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `tape limits RUN` to the command line."""
    p = sub.add_parser(
        "limits",
        parents=[common],
        help="list a run's limits, operator overrides and current usage",
        description="Replay RUN and list its limits (config and overrides), the operators' "
        "audit trail and each scope's usage at the end of the run.",
    )
    p.add_argument("run", help="run directory or run id under --journals")
    p.set_defaults(func=cmd_limits)


def cmd_limits(args: argparse.Namespace, out: Console) -> int:
    """Print the limits, the audit trail and the usage of one run."""
    from tape.cli import resolve_run

    run_dir = resolve_run(args.run, args.journals)
    result, engine = replay(run_dir, verify=False)
    operator_inputs = operator_trail(JournalReader(run_dir))
    now = max((seq_ts for _, seq_ts, _ in operator_inputs), default=0)
    now = max(now, _last_ts(engine))
    out.print(f"run {result.run_id}: {result.inputs:,} inputs replayed; usage at ts {now}")
    out.print(limits_table(engine, now))
    out.print(trail_table(operator_inputs))
    out.print(usage_table(engine, now))
    states = engine.trading_states()
    if states:
        table = Table(title="trading states (not ACTIVE)")
        for col in ("scope", "state", "why"):
            table.add_column(col)
        for scope, state, why in states:
            table.add_row(scope, state.value, why)
        out.print(table)
    else:
        out.print("trading state: every scope ACTIVE")
    return 0


def operator_trail(reader: JournalReader) -> list[tuple[int, int, Message]]:
    """Return (seq, ts_recv, message) of every operator input of a journal, in seq order."""
    names = KIND_DICTIONARY.to_pylist()
    wanted = np.array([names.index(k.__name__) for k in _OPERATOR_KINDS], dtype=np.int8)
    trail: list[tuple[int, int, Message]] = []
    for batch in reader.batches():
        codes = batch.column(2).indices.to_numpy(zero_copy_only=False)
        mask = np.isin(codes, wanted)
        if not mask.any():
            continue
        picked = batch.filter(pa.array(mask))
        seqs = picked.column(0).to_pylist()
        for seq, msg in zip(seqs, decode_messages(picked), strict=True):
            trail.append((seq, msg.ts_recv, msg))
    return trail


def _last_ts(engine: Engine) -> int:
    last = 0
    for order in engine.orders.values():
        last = max(last, order.ts_last)
    return last


def limits_table(engine: Engine, now: int) -> Table:
    """Tabulate every configured limit and override with the value in force at `now`."""
    cfg = engine.limits.config
    table = Table(title="limits (firm > account > strategy > instrument)")
    for col in ("scope", "limit", "configured", "in force", "source"):
        table.add_column(col)
    scopes: list[tuple[str, str, LimitSet]] = [("firm", "*", cfg.firm)]
    for level, field in (
        ("account", cfg.accounts),
        ("strategy", cfg.strategies),
        ("instrument", cfg.instruments),
        ("venue", cfg.venues),
    ):
        scopes += [(level, name, limits) for name, limits in sorted(field.items())]
    shown: set[tuple[str, str, str]] = set()
    for level, name, limits in scopes:
        for limit in LIMIT_NAMES:
            configured = getattr(limits, limit)
            value, source = engine.limits.value(level, name, limit, now)
            if configured is None and value is None:
                continue
            shown.add((level, name, limit))
            table.add_row(_scope(level, name), limit, _num(configured), _num(value), source)
    for override in engine.limits.overrides():
        level, name = scope_of(override.scope)
        if (level, name, override.limit) in shown:
            continue
        value, source = engine.limits.value(level, name, override.limit, now)
        table.add_row(_scope(level, name), override.limit, "-", _num(value), source)
    for scope, value in sorted(engine.config.max_order_qty.items()):
        override = engine.qty_overrides.get(scope)
        live = override is not None and (override.expires_at is None or now < override.expires_at)
        in_force = override.value if live and override is not None else value
        source = f"override by {override.operator}" if live and override is not None else "config"
        table.add_row(f"instrument {scope}", "max_order_qty", _num(value), _num(in_force), source)
    for group, cap in sorted(cfg.exposure.items()):
        table.add_row(group, "max_gross_exposure", _num(cap), _num(cap), "config")
    return table


def trail_table(trail: list[tuple[int, int, Message]]) -> Table:
    """Tabulate the operator inputs: who did what, why, and until when."""
    table = Table(title=f"operator audit trail ({len(trail)} inputs)")
    for col in ("seq", "ts", "input", "operator", "what", "why"):
        table.add_column(col)
    for seq, ts, msg in trail:
        if isinstance(msg, LimitOverride):
            until = "for good" if msg.expires_at is None else f"until ts {msg.expires_at}"
            what = f"{msg.limit} = {msg.value} at {msg.scope} ({until})"
        elif isinstance(msg, KillSwitch):
            what = f"{msg.state.value} {msg.scope}" + (" and flatten" if msg.flatten else "")
        elif isinstance(msg, Resume):
            what = f"ACTIVE {msg.scope}"
        else:
            assert isinstance(msg, ReviewDecision)
            what = f"{'approve' if msg.approve else 'reject'} signal {msg.signal_id}"
        assert isinstance(msg, _OPERATOR_KINDS)
        table.add_row(str(seq), str(ts), type(msg).__name__, msg.operator, what, msg.reason)
    return table


def usage_table(engine: Engine, now: int) -> Table:
    """Tabulate each scope's worst-case usage against its limits."""
    table = Table(title="usage (positions plus working orders, worst case)")
    for col in ("scope", "measure", "used", "limit"):
        table.add_column(col)
    limits = engine.limits
    for scope, agg in sorted(engine.aggregates().items()):
        level, _, name = scope.partition(":")
        level, name = ("firm", "*") if scope == "*" else (level, name)
        net = max(abs(agg.long), abs(agg.short))
        if level in ("firm", "account", "strategy"):
            net_limit = limits.value(level, name, "max_net_notional", now)[0]
            gross_limit = limits.value(level, name, "max_gross_notional", now)[0]
        else:
            net_limit = None
            gross_limit = engine.config.risk.limits.exposure.get(scope)
        if scope == "*":
            gross_limit = _tighter(gross_limit, engine.config.risk.limits.exposure.get("portfolio"))
        label = "firm" if scope == "*" else scope
        table.add_row(label, "net notional", _num(net), _num(net_limit))
        table.add_row(label, "gross notional", _num(agg.gross), _num(gross_limit))
    for account, instrument in engine.account_instruments():
        pos, wb, ws = engine.account_qty(account, instrument)
        worst = max(abs(pos + wb), abs(pos - ws))
        limit = limits.value("instrument", instrument, "max_net_qty", now)[0]
        firm = limits.value("firm", "*", "max_net_qty", now)[0]
        table.add_row(
            f"{account} {instrument}",
            f"net qty (position {pos}, working +{wb}/-{ws})",
            _num(worst),
            _num(_tighter(limit, firm)),
        )
    for key in ("*", *sorted({f"account:{o.account}" for o in engine.orders.values()})):
        level, name = scope_of(key)
        limit = limits.value(level, name, "max_orders_per_window", now)[0]
        table.add_row(
            "firm" if key == "*" else key,
            "orders in the rate window",
            str(engine.order_rate(key, now)),
            _num(limit),
        )
    return table


def _tighter(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _scope(level: str, name: str) -> str:
    return "firm" if level == "firm" else f"{level} {name}"


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
