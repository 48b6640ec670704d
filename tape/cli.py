"""The `tape` command line: demo, replay and journal tools.

Every command that takes RUN accepts either a run directory (holding manifest.json) or a
run id looked up under `--journals` (default: ./journals). Exit codes: 0 success,
1 a check failed (replay diverged, journal damaged), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from engine.journal import JournalReader
from engine.replay import replay
from tape.display import positions_table

DEFAULT_JOURNALS = Path("journals")


class UsageError(Exception):
    """A bad argument or input the user can fix; printed without a traceback, exit 2."""


def resolve_run(run: str, journals: Path) -> Path:
    """Find the run directory named by RUN (a path, or a run id under `journals`)."""
    for candidate in (Path(run), journals / run):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise UsageError(
        f"RUN {run!r}: no journal at {run} or {journals / run} "
        "(expected a run directory containing manifest.json)"
    )


def _ns(ts: int | None) -> str:
    if ts is None:
        return "-"
    secs, ns = divmod(ts, 1_000_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs)) + f".{ns // 1000:06d}Z"


def cmd_replay(args: argparse.Namespace, out: Console) -> int:
    run_dir = resolve_run(args.run, args.journals)
    if args.what_if is not None:
        return cmd_what_if(args, run_dir, out)
    started = time.perf_counter()
    result, engine = replay(run_dir, verify=args.verify)
    elapsed = time.perf_counter() - started
    total = result.inputs + result.effects
    rate = total / elapsed if elapsed > 0 else 0.0
    if result.divergence is not None:
        out.print(f"replay DIVERGED: run {result.run_id}: {result.divergence.describe()}")
        return 1
    verb = "identical" if args.verify else "replayed (not verified)"
    out.print(
        f"replay OK: run {result.run_id}: {total:,} entries ({result.inputs:,} inputs, "
        f"{result.effects:,} effects) {verb} in {elapsed:.2f} s ({rate:,.0f} entries/s)"
    )
    if args.positions:
        out.print(positions_table(engine, title="net positions after replay"))
    return 0


def cmd_what_if(args: argparse.Namespace, run_dir: Path, out: Console) -> int:
    """Re-run a journal's market data and signals under another config; print the summary."""
    from analytics.summary import render, summarize
    from tape.sim_cmd import free_run_id
    from tape.whatif import WhatIfError, run_what_if

    if args.verify or args.positions:
        raise UsageError("--what-if makes a new run: --verify and --positions do not apply")
    run_id = free_run_id(args.journals, args.run_id, base=f"{run_dir.name}-whatif")
    try:
        result = run_what_if(run_dir, args.what_if, args.journals, run_id)
    except WhatIfError as exc:
        raise UsageError(str(exc)) from None
    out.print(render(summarize(result.run_dir, wall_s=result.wall_s)))
    out.print(
        f"what-if run at {result.run_dir}; compare: tape tca --compare {run_dir} {result.run_dir}"
    )
    return 0


def cmd_journal_verify(args: argparse.Namespace, out: Console) -> int:
    run_dir = resolve_run(args.run, args.journals)
    report = JournalReader(run_dir).verify()
    for torn in report.torn:
        out.print(f"torn tail: {torn}")
    for problem in report.problems:
        out.print(f"problem: {problem}")
    status = "OK" if report.ok else "DAMAGED"
    out.print(
        f"journal {status}: run {run_dir.name}: {report.segments} segments, "
        f"{report.batches} batches, {report.entries:,} entries, "
        f"seq {report.first_seq}..{report.last_seq}, hash chain "
        f"{'intact' if report.chain_ok else 'BROKEN'}"
    )
    return 0 if report.ok else 1


def cmd_journal_inspect(args: argparse.Namespace, out: Console) -> int:
    run_dir = resolve_run(args.run, args.journals)
    reader = JournalReader(run_dir)
    manifest = reader.manifest
    out.print(msgspec.json.format(msgspec.json.encode(manifest)).decode())
    report = reader.verify()
    table = Table(title=f"run {manifest.run_id}: entries by kind")
    table.add_column("kind")
    table.add_column("count", justify="right")
    for kind, count in reader.counts_by_kind().items():
        table.add_row(kind, f"{count:,}")
    out.print(table)
    out.print(
        f"entries {report.entries:,}  seq {report.first_seq}..{report.last_seq}  "
        f"ts_recv {_ns(report.first_ts)} .. {_ns(report.last_ts)}"
    )
    return 0


def cmd_journal_tail(args: argparse.Namespace, out: Console) -> int:
    if args.n < 1:
        raise UsageError(f"-n: expected a count >= 1, got {args.n}")
    run_dir = resolve_run(args.run, args.journals)
    for seq, cause, msg in JournalReader(run_dir).tail(args.n):
        origin = "in " if cause is None else f"out<{cause}"
        body = msgspec.json.encode(msg).decode()
        out.print(f"{seq:>10} {origin:<12} {body}", markup=False, highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every `tape` command."""
    parser = argparse.ArgumentParser(
        prog="tape", description="Deterministic, replay-first trade execution."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--journals",
        type=Path,
        default=DEFAULT_JOURNALS,
        help="directory holding run journals (default: ./journals)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from tape.demo import add_demo_parser
    from tape.export_cmd import add_export_parser
    from tape.limits_cmd import add_limits_parser
    from tape.sim_cmd import add_sim_parser
    from tape.tca_cmd import add_tca_parser

    add_demo_parser(sub, common)
    add_limits_parser(sub, common)
    add_sim_parser(sub, common)
    add_tca_parser(sub, common)

    p = sub.add_parser(
        "replay", parents=[common], help="replay a run's journal through a fresh engine"
    )
    p.add_argument("run", metavar="RUN", help="run directory or run id")
    p.add_argument("--verify", action="store_true", help="compare every effect with the journal")
    p.add_argument("--positions", action="store_true", help="print positions after the replay")
    p.add_argument(
        "--what-if",
        metavar="CONFIG",
        type=Path,
        help="re-run the journal's market data and signals under CONFIG (TOML: seed, "
        "[router] with fill_model, [risk], [calendars], [[venues]]) against the simulated "
        "venues, as a new run",
    )
    p.add_argument("--run-id", help="run id of the what-if run (default: RUN-whatif[-N])")
    p.set_defaults(func=cmd_replay)

    j = sub.add_parser("journal", help="inspect and check journals")
    jsub = j.add_subparsers(dest="journal_command", required=True)
    v = jsub.add_parser("verify", parents=[common], help="integrity, torn tail, hash chain")
    v.add_argument("run", metavar="RUN")
    v.set_defaults(func=cmd_journal_verify)
    i = jsub.add_parser("inspect", parents=[common], help="manifest, counts by kind, time range")
    i.add_argument("run", metavar="RUN")
    i.set_defaults(func=cmd_journal_inspect)
    t = jsub.add_parser("tail", parents=[common], help="the last entries")
    t.add_argument("run", metavar="RUN")
    t.add_argument("-n", type=int, default=20, help="how many entries (default 20)")
    t.set_defaults(func=cmd_journal_tail)
    add_export_parser(jsub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `tape` command line; return the exit code."""
    args = build_parser().parse_args(argv)
    out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
    try:
        code: int = args.func(args, out)
    except UsageError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"tape: error: {exc}", markup=False
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
