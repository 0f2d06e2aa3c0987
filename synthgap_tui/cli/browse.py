"""`ls`, `show`, `diff` and `logs`: finding runs and reading them."""

from __future__ import annotations

import argparse
import bisect
import sys
from itertools import islice
from datetime import datetime

from runners import protocol
from synthgap_tui.cli import common
from synthgap_tui.errors import UsageError, UserError
from synthgap_tui.store import RunStore


# name: (header, priority): at a narrow width the largest priorities go first.
LS_COLUMNS = {"row": ("#", 1), "id": ("id", 1), "name": ("name", 1), "state": ("state", 1), "top1": ("top-1", 2),
              "progress": ("progress", 3), "kind": ("kind", 4), "time": ("time", 5), "experiment": ("experiment", 6),
              "where": ("where", 7), "started": ("started", 8)}


def short_ids(ids: list[str], among: list[str], at_least: int = 6) -> dict[str, str]:
    """Each of ``ids``' shortest prefix of at least ``at_least`` characters that no
    other id of the sorted list ``among`` shares (git's short ids)."""
    out = {}
    for run_id in ids:
        at = bisect.bisect_left(among, run_id)
        # Only the neighbours in sorted order can share a longer prefix.
        shared = max((_common(run_id, among[j]) for j in (at - 1, at + 1) if 0 <= j < len(among)), default=0)
        out[run_id] = run_id[:max(at_least, shared + 1)]
    return out


def _common(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _ls_cells(run: dict, row: int, short: dict[str, str]) -> dict[str, str]:
    from synthgap_tui import formatting as fm

    return {"row": str(row), "id": short[run["id"]], "name": run.get("name", "-"), "state": run["state"],
            "top1": fm.fmt_top1(run), "progress": fm.fmt_progress(run), "kind": run.get("kind", "-"),
            "time": fm.fmt_duration(fm.run_duration(run)), "experiment": run.get("experiment", "-"),
            "where": fm.fmt_gpus(run), "started": fm.fmt_time(run.get("started"))}


def _sorted(runs: list[dict], field: str, descending: bool) -> list[dict]:
    """Runs by a column or any run field; runs without a value last, whichever the direction."""
    def value(run: dict):
        summary = run.get("summary") or {}
        return {"top1": summary.get("top1_mean", run.get("top1")),
                "time": (run.get("ended") or 0) - run["started"] if run.get("started") else None,
                "where": run.get("gpus")}.get(field, run.get(field, summary.get(field)))

    have = [r for r in runs if value(r) is not None]
    have.sort(key=lambda r: value(r) if isinstance(value(r), (int, float)) else str(value(r)), reverse=descending)
    return have + [r for r in runs if value(r) is None]


def cmd_ls(args) -> int:
    import os
    import shutil

    from synthgap_tui.runfilter import RunFilter

    store = common.open_store(args)
    query = RunFilter.parse(" ".join(args.query))
    flags = {"state": args.state, "kind": args.kind, "experiment": args.experiment}
    def wanted(r: dict) -> bool:
        return query.matches(r) and (not args.tag or args.tag in (r.get("tags") or []))

    if args.last is not None and not args.sort:  # the newest N: read from the newest back, stop at N
        runs = list(islice(filter(wanted, store.iterate(newest_first=True, **flags)), args.last))[::-1]
    else:
        runs = [r for r in store.iterate(**flags) if wanted(r)]
    if args.sort:
        runs = _sorted(runs, args.sort.lstrip("-"), args.sort.startswith("-"))
        if args.last is not None:
            runs = runs[:args.last]
    if args.quiet:
        sys.stdout.write("".join(r["id"] + "\n" for r in runs))
        return 0
    if args.json:
        common.print_json(runs)
        return 0
    if not runs:
        filters = [f"--{k} {v}" for k, v in (("state", args.state), ("kind", args.kind),
                                            ("experiment", args.experiment), ("tag", args.tag)) if v]
        filters += args.query
        if filters and store.count():
            unknown = query.unknown_keys(store.list())
            common.console().print(f"No run matches {' '.join(filters)}."
                             + (f" No run has a field {', '.join(map(repr, unknown))}." if unknown else ""),
                             markup=False)
        else:
            common.console().print("No runs yet. Submit an experiment with `synthgap submit SPEC.toml` "
                             "or try `synthgap demo`.", markup=False)
        return 0
    store.remember_listing([r["id"] for r in runs])  # `show 3` is the third row
    columns = args.columns or list(LS_COLUMNS)
    short = short_ids([r["id"] for r in runs], store.ids())
    header = [LS_COLUMNS[c][0] for c in columns]
    rows = [[cells[c] for c in columns] for i, r in enumerate(runs, 1) for cells in [_ls_cells(r, i, short)]]
    if sys.stdout.isatty() or "COLUMNS" in os.environ:  # a terminal (or a width asked for): fit it
        from synthgap_tui.formatting import fit_columns

        width = shutil.get_terminal_size().columns
        header, rows = fit_columns(header, rows, [LS_COLUMNS[c][1] for c in columns], width,
                                   squeeze=columns.index("name") if "name" in columns else None)
    from synthgap_tui.formatting import STATE_STYLE

    common.print_table(header, rows, styles={header.index("state"): lambda s: STATE_STYLE.get(s, "")}
                 if "state" in header else None, fit=False)
    windows = sorted({(r.get("summary") or {}).get("last_n") for r in runs} - {None})
    if "top-1" in header and windows:
        common.console().print(f"top-1: mean ± std over each run's last {' or '.join(map(str, windows))} epoch(s) "
                         "(report_last)", markup=False, style="dim")
    return 0


def _ls_columns(value: str) -> list[str]:
    names = [c.strip() for c in value.split(",") if c.strip()]
    unknown = [c for c in names if c not in LS_COLUMNS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown column(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {','.join(LS_COLUMNS)}")
    return names


def cmd_show(args) -> int:
    store = common.open_store(args)
    run_id = store.resolve(args.run)
    record = store.get(run_id)
    from synthgap_tui import cleanup, rundiff

    run_dir = store.workspace.run_dir(run_id)
    info = {
        "record": record,
        "spec": protocol.read_json(run_dir / protocol.SPEC_FILE),
        "status": protocol.read_json(run_dir / protocol.STATUS_FILE),
        "results": protocol.read_json(run_dir / protocol.RESULTS_FILE),
        "provenance": rundiff.provenance(store.workspace, run_id),
        "disk_bytes": cleanup.disk_use(run_dir),
        "paths": {name: str(run_dir / name) for name in (
            "", protocol.SPEC_FILE, protocol.STATUS_FILE, protocol.EVENTS_FILE,
            protocol.STDOUT_FILE, protocol.RESULTS_FILE, protocol.CHECKPOINT_DIR)},
    }
    info["paths"]["run_dir"] = info["paths"].pop("")
    from synthgap_tui import launchers

    status = info["status"] or {}
    info["usage"] = launchers.of_status(status)[0].usage(status["handle"]) if status.get("handle") else None
    if args.json:
        common.print_json(info)
        return 0
    from rich.markup import escape

    from synthgap_tui.formatting import fmt_bytes, fmt_where

    console = common.console()
    console.print(f"[bold]{escape(record.get('name', run_id))}[/]  {run_id}")
    where = ""
    if record.get("where"):
        where = "  " + fmt_where(record)
    elif record["state"] in protocol.ACTIVE_STATES and (info["status"] or {}).get("handle"):
        where = "  " + launchers.of_status(info["status"])[0].describe(info["status"]["handle"])
    console.print(f"state {common.state_markup(record['state'])}  kind {record.get('kind')}  "
                  f"experiment {escape(record.get('experiment', '-'))}{escape(where)}  "
                  f"disk {fmt_bytes(info['disk_bytes'])}" + ("  [dim](archived)[/]" if record.get("archived") else ""))
    if record.get("error"):
        console.print(f"[red]error:[/] {escape(record['error'])}")
    if info["usage"]:
        console.print(info["usage"], style="dim", markup=False)
    if not args.all:
        _show_summary(console, store, record, info)
        return 0
    if info["provenance"]:
        info["provenance"].pop("spec", None)  # printed above as [spec]
    for title in ("record", "spec", "status", "results", "provenance", "paths"):
        if info[title]:
            console.print(f"\n[bold]\\[{title}][/]")
            console.print("\n".join(escape(line) for line in common.readable(info[title])), soft_wrap=True)
    return 0


def _show_summary(console, store: RunStore, record: dict, info: dict) -> None:
    """`show`'s short form: when (local time), the values the run used that differ from
    its kind's defaults, its results, where its files are."""
    from rich.markup import escape

    from runners import kinds
    from synthgap_tui.formatting import fmt_duration, run_duration

    def when(ts):
        return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"

    times = [f"created {when(record.get('created'))}"] + [f"{k} {when(record[k])}" for k in ("started", "ended")
                                                          if record.get(k)]
    duration = run_duration(record)
    console.print("  ".join(times) + (f"  ({fmt_duration(duration)})" if duration else ""), markup=False)
    kind = kinds.all_kinds().get(record.get("kind"))
    spec = info["spec"] or {}
    if kind:
        used, plain = kind.resolve(spec), kind.defaults({})
        changed = {k: v for k, v in used.items() if k in kind.fields and v != plain.get(k)}
        if changed:
            console.print(f"\n[bold]values[/] [dim](where they differ from {kind.name}'s defaults; recipe "
                          "included)[/]")
            console.print("\n".join("  " + escape(line) for line in common.readable(changed)), soft_wrap=True)
    summary = info["results"] or record.get("summary") or {}
    metrics = [m for m in (kind.metrics if kind else ()) if m.value(summary)[0] is not None]
    if metrics:
        console.print("\n[bold]results[/]")
        for m in metrics:
            mean, std = m.value(summary)
            spread = f" ± {std:.{m.digits}f}" if std else ""
            averaged = m.key in ("top1", "top5") and summary.get("last_n")
            window = f" (last {summary['last_n']} epochs)" if averaged else ""
            console.print(f"  {m.label}: {mean:.{m.digits}f}{spread}{window}", markup=False)
    console.print("\n[bold]files[/]")
    console.print(f"  {info['paths']['run_dir']}", markup=False)
    ref = short_ids([record["id"]], store.ids())[record["id"]]
    console.print(f"  log: synthgap logs {ref}   everything: synthgap show {ref} --all", markup=False, style="dim")


def cmd_diff(args) -> int:
    """The spec fields and provenance in which runs differ."""
    from synthgap_tui import rundiff

    if len(args.runs) < 2:
        raise UsageError("diff compares runs: give two or more")
    store = common.open_store(args)
    ids = [store.resolve(ref) for ref in args.runs]
    names = [store.get(i).get("name", i) for i in ids]
    rows = rundiff.differences([rundiff.view(store.workspace, i) for i in ids])
    if args.json:
        common.print_json({"runs": ids, "differences": {key: values for key, values in rows}})
        return 0
    if not rows:
        common.console().print("No difference in spec or provenance.", markup=False)
        return 0
    common.print_table(["field", *names], [[key, *map(rundiff.fmt, values)] for key, values in rows], keep=1)
    return 0


def cmd_logs(args) -> int:
    """A run's stdout.log (or events, or its Slurm job's own output), or the supervisor's log;
    ``-n`` the last lines, ``-f`` follows (waiting for a file not written yet) until the run ends."""
    import time

    store = common.open_store(args)
    if args.supervisor:
        path, run_id = store.workspace.supervisor_log, None
    else:
        run_id = store.resolve(args.run)
        run_dir = store.workspace.run_dir(run_id)
        if args.job:
            from synthgap_tui import launchers

            launcher, handle = launchers.of_status(protocol.read_json(run_dir / protocol.STATUS_FILE, {}) or {})
            path = launcher.job_output(handle, run_dir)
            if path is None:
                raise UserError(f"run {run_id} has no Slurm job output (not a Slurm run, or its job has not "
                                "started)")
        else:
            path = run_dir / (protocol.EVENTS_FILE if args.events else protocol.STDOUT_FILE)
    offset = 0
    if args.lines is not None and path.exists():
        data = path.read_bytes()
        offset = len(data)
        sys.stdout.buffer.write(b"".join(data.splitlines(keepends=True)[-args.lines:] if args.lines else []))
        sys.stdout.buffer.flush()
        if not args.follow:
            return 0
    out = sys.stdout.buffer
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            out.write(chunk)
            out.flush()
            offset += len(chunk)
        ended = run_id is None or store.get(run_id)["state"] in protocol.ENDED_STATES
        if not args.follow or (ended and not chunk and run_id is not None):
            return 0
        time.sleep(0.5)


def _logs_usage(args) -> str | None:
    if args.supervisor == bool(args.run):
        return "logs takes a RUN, or --supervisor without one"
    if args.lines is not None and args.lines < 0:
        return "-n takes a number of lines >= 0"
    return None


def register(sub) -> None:
    """The subcommands of this group, each with its arguments."""

    p = sub.add_parser("ls", help="list runs (archived ones with archived:all)",
                       description="List runs. QUERY words are the runs screen's filter: words, state:S, "
                       "kind:K, tag:T, archived:yes|all, and field expressions such as 'freeze_layers>=8' "
                       "'arch=resnet50' 'top1>70' 'experiment~mtg' (quote them: > is the shell's).")
    p.add_argument("query", nargs="*", metavar="QUERY", help="filter words and FIELD OP VALUE expressions")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("-q", "--quiet", action="store_true", help="print whole run ids only, one a line (for xargs)")
    p.add_argument("-n", type=int, dest="last", metavar="N",
                   help="N runs only: the newest N, or the first N of --sort")
    p.add_argument("--sort", metavar="FIELD", help="order by a column or any run field, descending with a '-' "
                   "(--sort=-top1), e.g. top1, created, freeze_layers")
    p.add_argument("--columns", type=_ls_columns, metavar="A,B,C",
                   help="the columns to show, in order: " + ",".join(LS_COLUMNS))
    p.add_argument("--state", "--status", dest="state", choices=protocol.STATES,
                   help="only runs in this state (the filter's state:S)")
    p.add_argument("--kind", help="only runs of this kind (train, generate, …)")
    p.add_argument("--experiment", help="only runs of this experiment")
    p.add_argument("--tag", help="only runs with this tag")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="a run in short: state, times, the values it used, results, files")
    common.completes(p.add_argument("run", help="a run: id or prefix, @last, ls row number, EXPERIMENT/NAME or name"),
               "runs")
    p.add_argument("--all", action="store_true", help="the whole record: index, spec, status, results, provenance")
    p.add_argument("--json", action="store_true", help="print JSON only (everything)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("logs", help="print a run's output (stdout.log), its events, or the supervisor's log")
    common.completes(p.add_argument("run", nargs="?", help="the run (not with --supervisor)"), "runs")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing until the run ends (waits for a log not written yet; ctrl+c stops)")
    p.add_argument("-n", "--lines", type=int, metavar="N", help="the last N lines only (then follow with -f)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--events", action="store_true", help="print events.jsonl instead of stdout.log")
    which.add_argument("--job", action="store_true", help="the run's Slurm job output (submitit's log file)")
    which.add_argument("--supervisor", action="store_true", help="the supervisor's log instead of a run's")
    p.set_defaults(func=cmd_logs, check=_logs_usage)

    p = sub.add_parser("diff", help="the values (defaults and recipe included) and provenance in which runs differ")
    common.completes(p.add_argument("runs", nargs="+", metavar="RUN", help="two runs or more"), "runs")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_diff)
