"""The ``synthgap`` command line. Without a command it opens the TUI.

Every command is a small function taking the parsed arguments; rich and the
heavier modules are imported inside them so that ``synthgap ls --json`` stays
quick and no command here imports torch (``doctor`` does, on purpose).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runners import protocol
from synthgap_tui.store import RunStore, StoreError
from synthgap_tui.workspace import Workspace


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""


def _store(args) -> RunStore:
    return RunStore(Workspace.at(args.workspace))


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _print_json(data) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


# -- ls / show ----------------------------------------------------------------
def cmd_ls(args) -> int:
    runs = _store(args).list(state=args.status, kind=args.kind, experiment=args.experiment)
    if args.json:
        _print_json(runs)
        return 0
    from rich.table import Table

    from synthgap_tui import formatting as fm

    table = Table(box=None, header_style="bold")
    for col in ("id", "name", "experiment", "kind", "state", "progress", "top-1", "gpu",
                "started", "duration"):
        table.add_column(col, justify="right" if col in ("progress", "top-1") else "left")
    for r in runs:
        table.add_row(r["id"], r.get("name", "-"), r.get("experiment", "-"), r.get("kind", "-"),
                      _state_markup(r["state"]), fm.fmt_progress(r), fm.fmt_top1(r), fm.fmt_gpus(r),
                      fm.fmt_time(r.get("started")), fm.fmt_duration(fm.run_duration(r)))
    console = _console()
    if runs:
        console.print(table)
    else:
        console.print("No runs yet. Submit an experiment with `synthgap submit SPEC.toml` "
                      "or try `synthgap demo`.")
    return 0


def _state_markup(state: str) -> str:
    from synthgap_tui.formatting import STATE_STYLE

    return f"[{STATE_STYLE.get(state, '')}]{state}[/]"


def cmd_show(args) -> int:
    store = _store(args)
    run_id = store.resolve(args.run)
    record = store.get(run_id)
    run_dir = store.workspace.run_dir(run_id)
    info = {
        "record": record,
        "spec": protocol.read_json(run_dir / protocol.SPEC_FILE),
        "status": protocol.read_json(run_dir / protocol.STATUS_FILE),
        "results": protocol.read_json(run_dir / protocol.RESULTS_FILE),
        "paths": {name: str(run_dir / name) for name in (
            "", protocol.SPEC_FILE, protocol.STATUS_FILE, protocol.EVENTS_FILE,
            protocol.STDOUT_FILE, protocol.RESULTS_FILE, protocol.CHECKPOINT_DIR)},
    }
    info["paths"]["run_dir"] = info["paths"].pop("")
    if args.json:
        _print_json(info)
        return 0
    from rich.pretty import Pretty
    from rich.rule import Rule

    console = _console()
    console.print(Rule(f"{record.get('name', run_id)}  [dim]{run_id}[/]"))
    console.print(f"state {_state_markup(record['state'])}  kind {record.get('kind')}  "
                  f"experiment {record.get('experiment', '-')}")
    if record.get("error"):
        console.print(f"[red]error:[/] {record['error']}")
    for title in ("spec", "status", "results", "paths"):
        if info[title]:
            console.print(Rule(title, style="dim"))
            console.print(Pretty(info[title]))
    return 0


# -- db -----------------------------------------------------------------------
def cmd_db_rebuild(args) -> int:
    store = _store(args)
    n = store.rebuild()
    _console().print(f"Rebuilt {store.path} from {n} run director{'y' if n == 1 else 'ies'}.")
    return 0


# -- doctor -------------------------------------------------------------------
def cmd_doctor(args) -> int:
    from synthgap_tui.doctor import run_checks

    console = _console()
    failures = 0
    for check in run_checks(Workspace.at(args.workspace)):
        style = {"OK": "green", "WARN": "yellow", "FAIL": "red"}[check.level]
        console.print(f"[{style}]{check.level:<4}[/] {check.name:<12} {check.message}")
        failures += check.level == "FAIL"
    return 1 if failures else 0


# -- TUI ----------------------------------------------------------------------
def cmd_tui(args) -> int:
    from synthgap_tui.app import create_app

    create_app(Workspace.at(args.workspace)).run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthgap",
        description="Compose, run and compare synthetic-vs-real training experiments.",
    )
    parser.add_argument("--workspace", "-w", metavar="DIR",
                        help="workspace folder (default: $SYNTHGAP_HOME or ~/.synthgap)")
    parser.set_defaults(func=cmd_tui)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("ls", help="list runs")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--status", choices=protocol.STATES, help="only runs in this state")
    p.add_argument("--kind", help="only runs of this kind (train, generate, …)")
    p.add_argument("--experiment", help="only runs of this experiment")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="spec, status, summary and paths of one run")
    p.add_argument("run", help="run id, id prefix or run name")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("db", help="maintain the run index")
    dbsub = p.add_subparsers(title="db commands", metavar="ACTION", required=True)
    q = dbsub.add_parser("rebuild", help="recreate runs.json from the run directories")
    q.set_defaults(func=cmd_db_rebuild)

    p = sub.add_parser("doctor", help="check Python, torch/CUDA, diffusers, NVML and disk")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("tui", help="open the app (the default)")
    p.set_defaults(func=cmd_tui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (StoreError, UserError) as e:
        print(f"synthgap: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
