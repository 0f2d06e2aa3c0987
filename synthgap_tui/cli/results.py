"""`export`, `demo` and `tui`: results as tables, figures and trackers, and the app."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from runners import protocol
from synthgap_tui.cli import common
from synthgap_tui.errors import UserError
from synthgap_tui.workspace import Workspace


def cmd_demo(args) -> int:
    from synthgap_tui import demo

    ws = Workspace.at(args.workspace)  # the default workspace, so that `synthgap ls` and the app show it
    try:
        with common.working("Writing the demo's data and submitting its runs…"):
            ids, fresh = demo.start(ws, quick=args.quick)
    except demo.DemoError as e:
        raise UserError(str(e))
    console = common.console()
    console.print(f"{'Submitted' if fresh else 'Reusing'} the demo experiment ({len(ids)} runs) in {ws.root}",
                  markup=False)
    if not args.no_tui:
        from synthgap_tui.app import create_app

        create_app(ws).run()
        return 0
    import time

    last, start = {}, time.time()

    def tick(runs):
        counts = {}
        for r in runs:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        if counts != last:
            last.clear()
            last.update(counts)
            ended = sum(n for s, n in counts.items() if s in protocol.ENDED_STATES)
            # ETA from the pace so far: the demo's runs are of a size.
            eta = (time.time() - start) / ended * (len(runs) - ended) if ended else None
            running = [r.get("name", r["id"]) for r in runs if r["state"] in protocol.ACTIVE_STATES]
            console.print(time.strftime("%H:%M:%S"), f"{ended}/{len(runs)} done ",
                          "  ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                          (f"  ETA {_fmt_eta(eta)}" if eta else "")
                          + (f"  now: {', '.join(running)}" if running else ""),
                          markup=False)

    runs = demo.baselines_first(demo.wait(ws, ids, on_tick=tick))
    _print_results(ws, runs, title="demo results (top-1 on real Fashion-MNIST, mean ± std of the last epochs)")
    return 0 if all(r["state"] == protocol.FINISHED for r in runs) else 1


def _fmt_eta(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _print_results(ws: Workspace, records: list[dict], title: str) -> None:
    from rich.markup import escape

    from synthgap_tui import analysis

    data = analysis.load_runs(ws, records)
    header, rows = analysis.results_table(data)
    common.print_table(header, rows, title=title, keep=1)
    console = common.console()
    sweep = analysis.find_sweep(data)
    if sweep:
        for name, fit in sweep.fits.items():
            console.print(f"fit {escape(name)}: {fit}", highlight=False, markup=False)


def cmd_export(args) -> int:
    from synthgap_tui import analysis

    store = common.open_store(args)
    if args.runs:
        records = [store.get(store.resolve(ref)) for ref in args.runs]
    elif args.experiment:
        records = store.list(experiment=args.experiment)
    else:
        raise UserError("name runs or --experiment E")
    if not records:
        raise UserError(f"no runs in experiment {args.experiment!r}")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.format != "tables":
        from synthgap_tui import trackers

        out = Path(args.out) if args.out else store.workspace.root / "exports" / stamp / (
            "mlruns" if args.format == "mlflow" else "tensorboard")
        with common.working(f"Exporting {len(records)} run(s) to {args.format}…"):
            written = trackers.export(store.workspace, records, out, args.format)
        if args.json:
            common.print_json([str(p) for p in written])
        else:
            common.console().print(f"wrote {len(records)} run(s) to {out}; open with: "
                             f"{trackers.how_to_open(args.format, out)}", markup=False)
        return 0
    out = Path(args.out) if args.out else store.workspace.root / "exports" / stamp
    with common.working(f"Writing tables and figures of {len(records)} run(s)…"):
        written = analysis.export(analysis.load_runs(store.workspace, records), out,
                                  args.experiment or f"{len(records)} runs")
    if args.json:
        common.print_json([str(p) for p in written])
    else:
        _print_results(store.workspace, records, title=args.experiment or "runs")
        common.console().print(f"wrote {len(written)} files to {out}", markup=False)
    return 0


def cmd_tui(args) -> int:
    from synthgap_tui.app import create_app

    create_app(common.workspace(args, create=True)).run()
    return 0


def register(sub) -> None:
    """The subcommands of this group, each with its arguments."""
    p = sub.add_parser("demo", help="the whole study on a CPU in minutes, as the experiment 'demo' of the workspace")
    p.add_argument("--no-tui", action="store_true", help="wait headless and print the results table")
    p.add_argument("--quick", action="store_true", help="a cut-down demo (a smoke test, ~2 minutes)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="CSV/Markdown tables and PNG/SVG figures of runs, or TensorBoard/MLflow logs")
    common.completes(p.add_argument("runs", nargs="*", metavar="RUN",
                                    help="these runs (default: by --experiment, or all)"),
               "runs")
    p.add_argument("--experiment", "-e", help="every run of this experiment")
    p.add_argument("--format", "-f", choices=("tables", "tensorboard", "mlflow"), default="tables",
                   help="tables and figures (default), TensorBoard event files, or an MLflow file store")
    p.add_argument("--out", metavar="DIR", help="folder to write (default: workspace/exports/<time>)")
    p.add_argument("--json", action="store_true", help="print the written paths as JSON only")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tui", help="open the app (the default)")
    p.set_defaults(func=cmd_tui)
