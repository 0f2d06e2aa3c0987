"""`db rebuild`, `doctor` and `supervisor`: the workspace itself."""

from __future__ import annotations

from synthgap_tui.cli import common
from synthgap_tui.workspace import Workspace


def cmd_db_rebuild(args) -> int:
    from synthgap_tui.supervisor import Config

    store = common.open_store(args)
    with common.working(f"Rebuilding {store.path} from the run folders…"):
        n = store.rebuild(Config.load(store.workspace).keep_backups)
    if args.json:
        common.print_json({"index": str(store.path), "runs": n})
    else:
        common.console().print(f"Rebuilt {store.path} from {n} run director{'y' if n == 1 else 'ies'}.", markup=False)
    return 0


def cmd_doctor(args) -> int:
    from rich.markup import escape

    from synthgap_tui.doctor import run_checks

    checks = run_checks(Workspace.at(args.workspace))
    if args.json:
        checks = list(checks)
        common.print_json([{"level": c.level, "name": c.name, "message": c.message} for c in checks])
        return 1 if any(c.level == "FAIL" for c in checks) else 0
    console, failures = common.console(), 0
    for check in checks:  # each as it finishes: importing torch or asking NVML takes seconds
        style = {"OK": "green", "WARN": "yellow", "FAIL": "red"}[check.level]
        console.print(f"[{style}]{check.level:<4}[/] {check.name:<12} {escape(check.message)}")
        failures += check.level == "FAIL"
    return 1 if failures else 0


def cmd_supervisor(args) -> int:
    from synthgap_tui.supervisor import ensure_supervisor, is_running, stop_supervisor

    ws = common.workspace(args)
    if args.action == "start":
        done = ensure_supervisor(ws)
        message = "supervisor started" if done else "supervisor already running"
    elif args.action == "stop":
        done = stop_supervisor(ws)
        message = ("supervisor stopped; runs keep going and a submit starts it again" if done
                   else "supervisor was not running")
    else:
        done = is_running(ws)
        message = "running" if done else "not running (it starts with the next submit)"
    if args.json:
        common.print_json({"running": is_running(ws), "message": message})
    else:
        common.console().print(message, markup=False)
    return 0


def register(sub) -> None:
    """The subcommands of this group, each with its arguments."""
    p = sub.add_parser("db", help="maintain the run index")
    dbsub = p.add_subparsers(title="db commands", metavar="ACTION", required=True)
    q = dbsub.add_parser("rebuild", help="recreate runs.sqlite from the run directories")
    q.add_argument("--json", action="store_true", help="print JSON only")
    q.set_defaults(func=cmd_db_rebuild)

    p = sub.add_parser("doctor", help="check Python, torch/CUDA, diffusers, NVML and disk")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("supervisor", help="the background process that runs the queue")
    p.add_argument("action", choices=("status", "start", "stop"), nargs="?", default="status",
                   help="status (the default): is it up, and its pid; start it; stop it (runs keep going)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_supervisor)
