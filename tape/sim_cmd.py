"""`tape sim`: run the simulator on market data and signals from files.

Invariants:
- Nothing is written before every input is known good: the config is loaded, the
  signals file is checked, and the market files are read through once and checked
  (`MarketInput.check`), all before the journal directory is created. Bad input exits 2
  with the list of problems and leaves no journal behind.
- The run id is the one given with --run-id, which must not exist yet, or the first free
  of `sim`, `sim-2`, `sim-3`, ... under --journals.
- The run itself is `sim.run.SimRun`: its journal replays like any other
  (`tape replay RUN --verify`). The summary is computed from the journal afterwards.
- Progress bars are drawn only on a terminal.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from analytics.fill_model import FillModelError, load_fill_model
from analytics.summary import render, summarize
from engine import native
from engine.fillmodel import FillModel, model_sha256
from engine.messages import Signal
from sim.run import SimRun
from tape.config import ConfigError, SimConfig, demo_config, load_config
from tape.inputs import InputError, MarketInput, load_signals

DEFAULT_RUN_ID = "sim"


def free_run_id(journals: Path, wanted: str | None, base: str = DEFAULT_RUN_ID) -> str:
    """Use the run id asked for (which must be new and a plain name), or the first free
    of `base`, `base-2`, ... under `journals`."""
    from tape.cli import UsageError

    if wanted is not None:
        if not wanted or wanted in (".", "..") or "/" in wanted or "\\" in wanted:
            raise UsageError(f"--run-id {wanted!r}: expected a name without path separators")
        if (journals / wanted).exists():
            raise UsageError(
                f"--run-id {wanted!r}: a journal already exists at {journals / wanted}; "
                "choose another run id"
            )
        return wanted
    n, run_id = 1, base
    while (journals / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def _progress(out: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    )


def cmd_sim(args: argparse.Namespace, out: Console) -> int:
    """Check the inputs, run the sim, print the summary; return the exit code."""
    from tape.cli import UsageError

    try:
        setup: SimConfig = load_config(args.config) if args.config else demo_config()
    except ConfigError as exc:
        raise UsageError(f"--config: {exc}") from None
    run_id = free_run_id(args.journals, args.run_id)
    seed = setup.seed if args.seed is None else args.seed
    problems: list[str] = []
    stopped = False
    signals: list[Signal] = []
    try:
        signals = load_signals(args.signals, setup.instruments)
    except InputError as exc:
        problems += exc.problems
        stopped = exc.stopped
    try:
        market = MarketInput(args.market, setup.instruments)
        with _progress(out) as bar:
            task = bar.add_task("checking market data", total=market.rows_hint())
            info = market.check(progress=lambda rows: bar.update(task, completed=rows))
    except InputError as exc:
        problems += exc.problems
        stopped = stopped or exc.stopped
    if problems:
        described = InputError(problems, stopped=stopped).describe()
        raise UsageError(f"bad input, nothing run:\n{described}")
    source = "demo setup" if not args.config else str(args.config)
    out.print(
        f"tape sim: run {run_id}: {info.rows:,} market rows from {info.files} file(s), "
        f"{len(signals):,} signals; {len(setup.instruments)} instruments x "
        f"{len(setup.venues)} venues ({source}), seed {seed}"
    )
    model: FillModel | None = None
    if setup.fill_model is not None:
        try:
            model, _ = load_fill_model(setup.fill_model)
        except FillModelError as exc:
            raise UsageError(f"--config: router.fill_model: {exc}") from None
    sha = None if model is None else model_sha256(model)
    sim = SimRun(
        setup.engine_config(run_id, seed, fill_model_sha256=sha),
        setup.venues,
        args.journals,
        fill_model=model,
    )
    try:
        with _progress(out) as bar:
            task = bar.add_task("simulating", total=info.rows)
            result = sim.run(
                market.batches(),
                signals,
                progress=lambda rows: bar.update(task, completed=rows),
            )
    except InputError as exc:  # the files changed after the check
        raise UsageError(
            f"market data changed during the run (journal left incomplete at "
            f"{args.journals / run_id}):\n{exc.describe()}"
        ) from None
    out.print(render(summarize(result.run_dir, wall_s=result.wall_s)))
    out.print(f"engine: {native.status().describe()}")
    if result.withheld:
        out.print(
            f"note: {result.withheld:,} market rows fell in stale-quote windows of the fault "
            "plan: the venues saw them, the engine did not"
        )
    if result.undone:
        out.print(f"note: {result.undone:,} events after the drain horizon were never processed")
    out.print(
        f"journal at {result.run_dir} (check: tape journal verify {result.run_dir}; "
        f"replay: tape replay {result.run_dir} --verify)"
    )
    return 0


def add_sim_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `tape sim`."""
    p = sub.add_parser(
        "sim",
        parents=[common],
        help="run the simulator on market data and signals from files",
        description="Run the simulator on market data and signals from files (schemas: "
        "docs/inputs.md). Exit 2 with every problem listed if an input is bad.",
    )
    p.add_argument(
        "--market",
        required=True,
        metavar="M",
        help="market data: a .parquet, .arrow/.feather/.ipc, .arrows or .csv file, "
        "a directory of them or a glob (read in name order)",
    )
    p.add_argument(
        "--signals", required=True, metavar="S", help="signals: a .parquet, .csv or .jsonl file"
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="C",
        help="TOML file with instruments, venues, engine settings and seed "
        "(default: the demo's setup, as in tape/samples/sim.toml)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the run (default: the config's, else 7)"
    )
    p.add_argument(
        "--run-id",
        default=None,
        help=f"run id (default: the first free of {DEFAULT_RUN_ID}, {DEFAULT_RUN_ID}-2, ...)",
    )
    p.set_defaults(func=cmd_sim)
