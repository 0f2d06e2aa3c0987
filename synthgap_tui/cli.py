"""The ``synthgap`` command line. Without a command it opens the TUI.

Every command is a small function taking the parsed arguments; rich and the
heavier modules are imported inside them so that ``synthgap ls --json`` stays
quick and no command here imports torch (``doctor`` does, on purpose).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from runners import protocol
from synthgap_tui.errors import UsageError, UserError, problem
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace


def _workspace(args, create: bool = False) -> Workspace:
    """The workspace a command works on. Only commands that write create one,
    and say so: a mistyped -w path is an error, not a new empty workspace."""
    ws = Workspace.at(args.workspace)
    if not ws.root.is_dir():
        if not create:
            raise UserError(f"no workspace at {ws.root}: `synthgap submit` or `synthgap demo` creates one; "
                            "-w DIR or $SYNTHGAP_HOME picks another")
        ws.ensure()
        print(f"synthgap: created the workspace {ws.root}", file=sys.stderr)
    return ws


def _store(args, create: bool = False) -> RunStore:
    return RunStore(_workspace(args, create))


def _console(stderr: bool = False):
    from rich.console import Console

    # In a pipe, lines are not folded at 80 columns: scripts get whole lines.
    return Console(stderr=stderr, highlight=False, soft_wrap=not (sys.stderr if stderr else sys.stdout).isatty())


def _print_json(data) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def _print_table(header: list[str], rows: list[list[str]], title: str | None = None, keep: int = 2,
                 styles: dict[int, Callable[[str], str]] | None = None, fit: bool = True) -> None:
    """Rows as a table. The first ``keep`` columns (ids, names) are never cut:
    on a terminal the others fold to fit; in a pipe, or already fitted (``fit`` false),
    it is plain aligned text."""
    if not sys.stdout.isatty():
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
        lines = ([title] if title else []) + ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                                               for line in [header, *rows]]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", title=title, title_justify="left")
    for i, col in enumerate(header):
        table.add_column(col, no_wrap=i < keep or not fit, min_width=max((len(r[i]) for r in rows), default=0)
                         if i < keep else None, overflow="fold" if fit else "ellipsis")
    for r in rows:
        table.add_row(*(Text(c, style=(styles or {}).get(i, lambda _: "")(c)) for i, c in enumerate(r)))
    _console().print(table)


# -- ls / show ----------------------------------------------------------------
# name: (header, priority): at a narrow width the largest priorities go first.
LS_COLUMNS = {"row": ("#", 1), "id": ("id", 1), "name": ("name", 1), "state": ("state", 1), "top1": ("top-1", 2),
              "progress": ("progress", 3), "kind": ("kind", 4), "time": ("time", 5), "experiment": ("experiment", 6),
              "where": ("where", 7), "started": ("started", 8)}


def short_ids(ids: list[str], at_least: int = 6) -> dict[str, str]:
    """Each id's shortest unique prefix of at least ``at_least`` characters (git's short ids)."""
    out = {}
    for run_id in ids:
        n = at_least
        while n < len(run_id) and any(o != run_id and o.startswith(run_id[:n]) for o in ids):
            n += 1
        out[run_id] = run_id[:n]
    return out


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

    store = _store(args)
    query = RunFilter.parse(" ".join(args.query))
    flags = {"state": args.state, "kind": args.kind, "experiment": args.experiment}
    everything = store.list()
    runs = [r for r in everything if query.matches(r) and all(v is None or r.get(k) == v for k, v in flags.items())
            and (not args.tag or args.tag in (r.get("tags") or []))]
    if args.sort:
        runs = _sorted(runs, args.sort.lstrip("-"), args.sort.startswith("-"))
    if args.last is not None:  # sorted: the first N; in creation order: the newest N
        runs = (runs[:args.last] if args.sort else runs[-args.last:]) if args.last else []
    if args.quiet:
        sys.stdout.write("".join(r["id"] + "\n" for r in runs))
        return 0
    if args.json:
        _print_json(runs)
        return 0
    if not runs:
        filters = [f"--{k} {v}" for k, v in (("state", args.state), ("kind", args.kind),
                                            ("experiment", args.experiment), ("tag", args.tag)) if v]
        filters += args.query
        if filters and everything:
            unknown = query.unknown_keys(everything)
            _console().print(f"No run matches {' '.join(filters)}."
                             + (f" No run has a field {', '.join(map(repr, unknown))}." if unknown else ""),
                             markup=False)
        else:
            _console().print("No runs yet. Submit an experiment with `synthgap submit SPEC.toml` "
                             "or try `synthgap demo`.", markup=False)
        return 0
    store.remember_listing([r["id"] for r in runs])  # `show 3` is the third row
    columns = args.columns or list(LS_COLUMNS)
    short = short_ids([r["id"] for r in everything])
    header = [LS_COLUMNS[c][0] for c in columns]
    rows = [[cells[c] for c in columns] for i, r in enumerate(runs, 1) for cells in [_ls_cells(r, i, short)]]
    if sys.stdout.isatty() or "COLUMNS" in os.environ:  # a terminal (or a width asked for): fit it
        from synthgap_tui.formatting import fit_columns

        header, rows = fit_columns(header, rows, [LS_COLUMNS[c][1] for c in columns], shutil.get_terminal_size().columns,
                                   squeeze=columns.index("name") if "name" in columns else None)
    from synthgap_tui.formatting import STATE_STYLE

    _print_table(header, rows, styles={header.index("state"): lambda s: STATE_STYLE.get(s, "")}
                 if "state" in header else None, fit=False)
    windows = sorted({(r.get("summary") or {}).get("last_n") for r in runs} - {None})
    if "top-1" in header and windows:
        _console().print(f"top-1: mean ± std over each run's last {' or '.join(map(str, windows))} epoch(s) "
                         "(report_last)", markup=False, style="dim")
    return 0


def _ls_columns(value: str) -> list[str]:
    names = [c.strip() for c in value.split(",") if c.strip()]
    unknown = [c for c in names if c not in LS_COLUMNS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown column(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {','.join(LS_COLUMNS)}")
    return names


def _state_markup(state: str) -> str:
    from synthgap_tui.formatting import STATE_STYLE

    return f"[{STATE_STYLE.get(state, 'default')}]{state}[/]"


def _readable(data: dict, prefix: str = "") -> list[str]:
    """TOML-like lines: ``key = value`` with JSON values (true, null, "text")."""
    import json

    lines = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            lines += _readable(value, f"{name}.")
        else:
            lines.append(f"{name} = {json.dumps(value, ensure_ascii=False, default=str)}")
    return lines


def cmd_show(args) -> int:
    store = _store(args)
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
    if args.json:
        _print_json(info)
        return 0
    from rich.markup import escape

    from synthgap_tui import launchers
    from synthgap_tui.formatting import fmt_bytes, fmt_where

    console = _console()
    console.print(f"[bold]{escape(record.get('name', run_id))}[/]  {run_id}")
    where = ""
    if record.get("where"):
        where = "  " + fmt_where(record)
    elif record["state"] in protocol.ACTIVE_STATES and (info["status"] or {}).get("handle"):
        where = "  " + launchers.of_status(info["status"])[0].describe(info["status"]["handle"])
    console.print(f"state {_state_markup(record['state'])}  kind {record.get('kind')}  "
                  f"experiment {escape(record.get('experiment', '-'))}{escape(where)}  "
                  f"disk {fmt_bytes(info['disk_bytes'])}" + ("  [dim](archived)[/]" if record.get("archived") else ""))
    if record.get("error"):
        console.print(f"[red]error:[/] {escape(record['error'])}")
    if not args.all:
        _show_summary(console, store, record, info)
        return 0
    if info["provenance"]:
        info["provenance"].pop("spec", None)  # printed above as [spec]
    for title in ("record", "spec", "status", "results", "provenance", "paths"):
        if info[title]:
            console.print(f"\n[bold]\\[{title}][/]")
            console.print("\n".join(escape(line) for line in _readable(info[title])), soft_wrap=True)
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
            console.print("\n".join("  " + escape(line) for line in _readable(changed)), soft_wrap=True)
    summary = info["results"] or record.get("summary") or {}
    metrics = [m for m in (kind.metrics if kind else ()) if m.value(summary)[0] is not None]
    if metrics:
        console.print("\n[bold]results[/]")
        for m in metrics:
            mean, std = m.value(summary)
            spread = f" ± {std:.{m.digits}f}" if std else ""
            window = f" (last {summary['last_n']} epochs)" if m.key in ("top1", "top5") and summary.get("last_n") else ""
            console.print(f"  {m.label}: {mean:.{m.digits}f}{spread}{window}", markup=False)
    console.print("\n[bold]files[/]")
    console.print(f"  {info['paths']['run_dir']}", markup=False)
    ref = short_ids([r["id"] for r in store.list()])[record["id"]]
    console.print(f"  log: synthgap logs {ref}   everything: synthgap show {ref} --all", markup=False, style="dim")


# -- db -----------------------------------------------------------------------
def cmd_db_rebuild(args) -> int:
    from synthgap_tui.supervisor import Config

    store = _store(args)
    with _working(f"Rebuilding {store.path} from the run folders…"):
        n = store.rebuild(Config.load(store.workspace).keep_backups)
    if args.json:
        _print_json({"index": str(store.path), "runs": n})
    else:
        _console().print(f"Rebuilt {store.path} from {n} run director{'y' if n == 1 else 'ies'}.", markup=False)
    return 0


# -- doctor -------------------------------------------------------------------
def cmd_doctor(args) -> int:
    from rich.markup import escape

    from synthgap_tui.doctor import run_checks

    checks = run_checks(Workspace.at(args.workspace))
    if args.json:
        checks = list(checks)
        _print_json([{"level": c.level, "name": c.name, "message": c.message} for c in checks])
        return 1 if any(c.level == "FAIL" for c in checks) else 0
    console, failures = _console(), 0
    for check in checks:  # each as it finishes: importing torch or asking NVML takes seconds
        style = {"OK": "green", "WARN": "yellow", "FAIL": "red"}[check.level]
        console.print(f"[{style}]{check.level:<4}[/] {check.name:<12} {escape(check.message)}")
        failures += check.level == "FAIL"
    return 1 if failures else 0


# -- submit and the run lifecycle ----------------------------------------------
def cmd_submit(args) -> int:
    from synthgap_tui import runs as lifecycle
    from synthgap_tui.errors import SpecError
    from synthgap_tui.specs import load_spec
    from synthgap_tui.supervisor import ensure_supervisor

    try:
        exp = load_spec(args.spec)
        if args.dry_run:  # writes nothing: the workspace need not exist
            specs, missing = lifecycle.plan(exp, Workspace.at(args.workspace))
            _print_plan(exp, specs, missing, as_json=args.json)
            return 0
        store = _store(args, create=True)
        asked = exp.name
        ids = lifecycle.submit(exp, store, spec_text=Path(args.spec).read_text(), as_name=args.as_name)
        renamed = exp.name != (args.as_name or asked)
    except SpecError as e:
        raise UserError(f"the spec has {len(e.problems)} problem(s):\n  " + "\n  ".join(e.problems))
    started = ensure_supervisor(store.workspace)
    if args.json:
        _print_json({"experiment": exp.name, "runs": ids, "renamed_from": asked if renamed else None})
    else:
        from rich.markup import escape

        if renamed:
            _console().print(f"An experiment {escape(asked)!r} has runs already: these are [bold]{escape(exp.name)}[/] "
                             "(--as NAME picks the name).")
        _console().print(f"Queued {len(ids)} run(s) of [bold]{escape(exp.name)}[/]"
                         + ("; supervisor started." if started else "; the supervisor picks them up."))
    return 0


def _print_plan(exp, specs: dict, warnings: list[str], as_json: bool) -> None:
    rows = [{"name": s["name"], "kind": s["kind"], "depends_on": [r.name for r in exp.runs
             if r.name in exp.run(s["name"]).deps], "sweep": s["sweep"]} for s in specs.values()]
    if as_json:
        _print_json({"experiment": exp.name, "runs": rows, "warnings": warnings})
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(exp.name)}: {len(rows)} run(s) (dry run, nothing queued)", box=None,
                  title_justify="left")
    for col in ("#", "name", "kind", "after"):
        table.add_column(col)
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), escape(r["name"]), r["kind"], escape(", ".join(r["depends_on"]) or "-"))
    console = _console()
    console.print(table)
    for w in warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    if warnings:
        console.print("[dim]A real submit refuses missing inputs; point \\[datasets] at your folders.[/]")


def cmd_presets(args) -> int:
    from rich.markup import escape

    from synthgap_tui.presets import list_presets, preset_path

    if not args.name:
        presets = list_presets()
        if args.json:
            _print_json([{"name": p.name, "title": p.title, "path": str(p.path)} for p in presets])
        else:
            console = _console()
            for p in presets:
                console.print(f"[bold]{p.name:<26}[/] {escape(p.title)}")
            console.print("[dim]`synthgap presets NAME --out my.toml` copies one to edit.[/]")
        return 0
    text = preset_path(args.name).read_text()
    if args.out:
        out = Path(args.out)
        if out.exists() and not args.force:
            raise UserError(f"{out} exists; pass --force to overwrite it")
        out.write_text(text)
        _console().print(f"Wrote {out}; edit its [datasets] paths, then `synthgap submit {out}`.", markup=False)
    else:
        sys.stdout.write(text)
    return 0


def _each_run(args, act) -> int:
    """``act(store, run_id)`` for every named run: one failing does not stop the
    others; each outcome is printed; exit 1 if any failed."""
    store = _store(args)
    results = []
    for ref in args.runs:
        try:
            run_id = store.resolve(ref)
            results.append({"run": ref, "id": run_id, "ok": True, "message": act(store, run_id)})
        except UserError as e:
            results.append({"run": ref, "ok": False, "message": str(e)})
    if args.json:
        _print_json(results)
    else:
        for r in results:
            line = f"{r.get('id', r['run'])}: {r['message']}"
            (_console() if r["ok"] else _console(stderr=True)).print(line if r["ok"] else f"synthgap: {line}",
                                                                     markup=False)
    return 0 if all(r["ok"] for r in results) else 1


def cmd_cancel(args) -> int:
    from synthgap_tui import runs as lifecycle

    return _each_run(args, lifecycle.cancel)


def _requeue(args, resume: bool) -> int:
    from synthgap_tui import runs as lifecycle
    from synthgap_tui.supervisor import ensure_supervisor

    queued = []

    def act(store, run_id):
        attempt = lifecycle.requeue(store, run_id, resume=resume)
        queued.append(run_id)
        return f"queued again (attempt {attempt}" + (", from its last checkpoint)" if resume else ", from scratch)")

    code = _each_run(args, act)
    if queued:  # the runs that could be queued start, whatever happened to the others
        ensure_supervisor(_workspace(args))
    return code


def cmd_resume(args) -> int:
    return _requeue(args, resume=True)


def cmd_retry(args) -> int:
    return _requeue(args, resume=False)


def _confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; refuse in a pipe unless --yes (nothing is changed)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{question} Not a terminal: pass --yes to confirm.")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise UserError("nothing was changed")


def cmd_rm(args) -> int:
    """Delete runs (folders and index entries)."""
    from synthgap_tui import cleanup
    from synthgap_tui.formatting import fmt_bytes

    store = _store(args)
    ids = [store.resolve(ref) for ref in args.runs]
    plan = cleanup.plan_removal(store, ids, force=args.force)
    for run_id, why in plan.refused.items():
        print(f"synthgap: {run_id} {why}", file=sys.stderr)
    freed = 0
    if plan.runs:
        names = ", ".join(r.get("name", r["id"]) for r in plan.runs[:5]) + (" …" if len(plan.runs) > 5 else "")
        _confirm(f"Delete {len(plan.runs)} run(s) ({names}), {fmt_bytes(plan.bytes)}?", args.yes)
        with _working(f"Removing {len(plan.runs)} run(s)…"):
            freed = cleanup.remove(store, plan)
    if args.json:
        _print_json({"removed": [r["id"] for r in plan.runs], "refused": plan.refused, "bytes_freed": freed})
    elif plan.runs:
        _console().print(f"Removed {len(plan.runs)} run(s); freed {fmt_bytes(freed)}.", markup=False)
    return 1 if plan.refused else 0


def cmd_archive(args) -> int:
    from synthgap_tui import cleanup

    return _each_run(args, lambda store, run_id: cleanup.archive(store, run_id, archived=not args.undo))


def cmd_gc(args) -> int:
    """Prune checkpoints of finished runs."""
    from synthgap_tui import cleanup
    from synthgap_tui.formatting import fmt_bytes
    from synthgap_tui.supervisor import Config

    store = _store(args)
    config = Config.load(store.workspace)
    keep_last = config.gc_keep_last if args.keep is None else args.keep == "last"
    ids = [store.resolve(ref) for ref in args.runs] or None
    pruned = cleanup.gc(store, ids, keep_last=keep_last, dry_run=True)
    backups = store.prune_backups(config.keep_backups, dry_run=True) if ids is None else []
    total = sum(p.bytes for p in pruned) + sum(b.stat().st_size for b in backups)
    files = sum(len(p.files) for p in pruned) + len(backups)
    if files and not args.dry_run:
        _confirm(f"Delete {files - len(backups)} checkpoint file(s) of {sum(bool(p.files) for p in pruned)} finished "
                 f"run(s){f' and {len(backups)} old index copies' if backups else ''}, {fmt_bytes(total)}?", args.yes)
        with _working(f"Deleting {files} file(s)…"):
            pruned = cleanup.gc(store, [p.run_id for p in pruned], keep_last=keep_last)
            store.prune_backups(config.keep_backups)
    if args.json:
        _print_json({"dry_run": args.dry_run, "bytes_freed": 0 if args.dry_run else total,
                     "bytes": total, "index_backups": [str(b) for b in backups],
                     "runs": [{"id": p.run_id, "files": [str(f) for f in p.files], "bytes": p.bytes}
                              for p in pruned if p.files]})
        return 0
    for p in pruned:
        if p.files:
            _console().print(f"{p.run_id}: {len(p.files)} file(s), {fmt_bytes(p.bytes)}", markup=False)
    if backups:
        _console().print(f"{len(backups)} index copies older than the newest {config.keep_backups} "
                         f"([store] keep_backups)", markup=False)
    verb = "would free" if args.dry_run else "freed"
    _console().print(f"{verb} {fmt_bytes(0 if not files else total)} "
                     f"(kept final weights{' and last checkpoints' if keep_last else ''})", markup=False)
    return 0


def cmd_logs(args) -> int:
    """A run's stdout.log (or events, or its Slurm job's own output), or the supervisor's log;
    ``-n`` the last lines, ``-f`` follows (waiting for a file not written yet) until the run ends."""
    import time

    store = _store(args)
    if args.supervisor:
        path, run_id = store.workspace.supervisor_log, None
    else:
        run_id = store.resolve(args.run)
        run_dir = store.workspace.run_dir(run_id)
        if args.job:
            outputs = sorted((run_dir / "slurm").glob("*_log.out"), key=lambda p: p.stat().st_mtime)
            if not outputs:
                raise UserError(f"run {run_id} has no Slurm job output in {run_dir / 'slurm'} (not a Slurm run, "
                                "or its job has not started)")
            path = outputs[-1]
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


def cmd_supervisor(args) -> int:
    from synthgap_tui.supervisor import ensure_supervisor, is_running, stop_supervisor

    ws = _workspace(args)
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
        _print_json({"running": is_running(ws), "message": message})
    else:
        _console().print(message, markup=False)
    return 0


# -- demo and export ------------------------------------------------------------
def cmd_demo(args) -> int:
    from synthgap_tui import demo

    ws = Workspace.at(args.workspace)  # the default workspace, so that `synthgap ls` and the app show it
    try:
        with _working("Writing the demo's data and submitting its runs…"):
            ids, fresh = demo.start(ws, quick=args.quick)
    except demo.DemoError as e:
        raise UserError(str(e))
    console = _console()
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
                          (f"  ETA {_fmt_eta(eta)}" if eta else "") + (f"  now: {', '.join(running)}" if running else ""),
                          markup=False)

    runs = demo.baselines_first(demo.wait(ws, ids, on_tick=tick))
    _print_results(ws, runs, title="demo results (top-1 on real Fashion-MNIST, mean ± std of the last epochs)")
    return 0 if all(r["state"] == protocol.FINISHED for r in runs) else 1


def _fmt_eta(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


@contextlib.contextmanager
def _working(text: str):
    """A spinner on stderr while a slow step runs, at a terminal only (pipes stay clean)."""
    if not sys.stderr.isatty():
        yield
        return
    with _console(stderr=True).status(text):
        yield


def _print_results(ws: Workspace, records: list[dict], title: str) -> None:
    from rich.markup import escape

    from synthgap_tui import analysis

    data = analysis.load_runs(ws, records)
    header, rows = analysis.results_table(data)
    _print_table(header, rows, title=title, keep=1)
    console = _console()
    sweep = analysis.find_sweep(data)
    if sweep:
        for name, fit in sweep.fits.items():
            console.print(f"fit {escape(name)}: {fit}", highlight=False, markup=False)


def cmd_export(args) -> int:
    from synthgap_tui import analysis

    store = _store(args)
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
        with _working(f"Exporting {len(records)} run(s) to {args.format}…"):
            written = trackers.export(store.workspace, records, out, args.format)
        if args.json:
            _print_json([str(p) for p in written])
        else:
            _console().print(f"wrote {len(records)} run(s) to {out}; open with: "
                             f"{trackers.how_to_open(args.format, out)}", markup=False)
        return 0
    out = Path(args.out) if args.out else store.workspace.root / "exports" / stamp
    with _working(f"Writing tables and figures of {len(records)} run(s)…"):
        written = analysis.export(analysis.load_runs(store.workspace, records), out,
                                  args.experiment or f"{len(records)} runs")
    if args.json:
        _print_json([str(p) for p in written])
    else:
        _print_results(store.workspace, records, title=args.experiment or "runs")
        _console().print(f"wrote {len(written)} files to {out}", markup=False)
    return 0


# -- TUI ----------------------------------------------------------------------
def cmd_tui(args) -> int:
    from synthgap_tui.app import create_app

    create_app(_workspace(args, create=True)).run()
    return 0


def cmd_tag(args) -> int:
    """synthgap tag RUN... +tag -tag: the runs are the words without + or - that name runs."""
    from synthgap_tui import annotations

    words = list(args.words)  # REMAINDER: -tag is not an option here, so the options come by hand
    for flag in ("-w", "--workspace"):
        while flag in words[:-1]:
            at = words.index(flag)
            args.workspace = words.pop(at + 1)
            words.pop(at)
    if "--json" in words:
        words.remove("--json")
        args.json = True
    ops = [w for w in words if w[:1] in "+-"]
    runs = [w for w in words if w[:1] not in "+-"]
    if not runs or not ops:
        raise UsageError("usage: synthgap tag RUN... +tag -tag (at least one run and one +tag or -tag)")
    add, remove = annotations.parse_ops(ops)
    args.runs = runs
    return _each_run(args, lambda s, run_id: "tags: " + (" ".join(annotations.tag(s, run_id, add, remove))
                                                          or "(none)"))


def cmd_note(args) -> int:
    """synthgap note RUN [TEXT]; without TEXT, $EDITOR opens the note."""
    from synthgap_tui import annotations

    store = _store(args)
    run_id = store.resolve(args.run)
    text = args.text
    current = (store.get(run_id) or {}).get("note")
    if text is None and not args.edit and (args.json or not sys.stdout.isatty()):
        if args.json:  # reading the note: in a pipe or as JSON, nothing opens
            _print_json({"id": run_id, "note": current})
        elif current:
            sys.stdout.write(current.rstrip("\n") + "\n")
        return 0
    if text is None:
        text = _edit(current or "")
    annotations.note(store, run_id, text)
    message = "note saved" if text.strip() else "note removed"
    if args.json:
        _print_json({"id": run_id, "note": text.strip() or None, "message": message})
    else:
        _console().print(f"{run_id}: {message}", markup=False)
    return 0


def _edit(text: str) -> str:
    import os
    import shlex
    import subprocess
    import tempfile

    editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
    with tempfile.NamedTemporaryFile("w+", suffix=".md", delete=False) as f:
        f.write(text)
    try:
        if subprocess.run([*editor, f.name]).returncode != 0:
            raise UserError(f"{editor[0]} exited with an error; the note is unchanged")
        return Path(f.name).read_text()
    finally:
        os.unlink(f.name)


def cmd_diff(args) -> int:
    """The spec fields and provenance in which runs differ."""
    from synthgap_tui import rundiff

    if len(args.runs) < 2:
        raise UsageError("diff compares runs: give two or more")
    store = _store(args)
    ids = [store.resolve(ref) for ref in args.runs]
    names = [store.get(i).get("name", i) for i in ids]
    rows = rundiff.differences([rundiff.view(store.workspace, i) for i in ids])
    if args.json:
        _print_json({"runs": ids, "differences": {key: values for key, values in rows}})
        return 0
    if not rows:
        _console().print("No difference in spec or provenance.", markup=False)
        return 0
    _print_table(["field", *names], [[key, *map(rundiff.fmt, values)] for key, values in rows], keep=1)
    return 0


def cmd_kinds(args) -> int:
    """The run kinds of the registry and their fields (README's field reference)."""
    from runners import kinds

    from synthgap_tui.fieldref import kind_rows
    from synthgap_tui.specs import fields_of

    registry = kinds.all_kinds()
    if args.name and args.name not in registry:
        raise UserError(str(kinds.UnknownKind(args.name)))
    chosen = {args.name: registry[args.name]} if args.name else registry
    if args.json:
        _print_json({name: {"runner": k.runner, "help": k.help, "artifacts": k.artifacts,
                            "fields": {f: {"default": k.defaults().get(f), "allowed": field.allowed(),
                                           "help": field.help} for f, field in fields_of(k).items()}}
                     for name, k in chosen.items()})
        return 0
    if not args.name:
        _print_table(["kind", "runner", "what it does"], [[n, k.runner, k.help] for n, k in chosen.items()])
        _console().print("[dim]`synthgap kinds NAME` lists a kind's fields.[/]")
        return 0
    for name, kind in chosen.items():
        _console().print(f"{name}: {kind.help}\nrunner: python -m {kind.runner}; produces: "
                         + (", ".join(f"{a} ({what})" for a, what in kind.artifacts.items()) or "nothing"),
                         markup=False)
        _print_table(["field", "default", "allowed", "help"], kind_rows(kind), keep=1)
    return 0


# Completion functions the scripts call for words only the workspace knows:
# `synthgap completion --words runs` prints them (the default workspace, or $SYNTHGAP_HOME).
_COMPLETE_PREAMBLE = {
    "bash": """
_synthgap_words() { synthgap completion --words "$1" 2>/dev/null; }
_synthgap_runs() { compgen -W "$(_synthgap_words runs)" -- "$1"; }
_synthgap_presets() { compgen -W "$(_synthgap_words presets)" -- "$1"; }
_synthgap_kinds() { compgen -W "$(_synthgap_words kinds)" -- "$1"; }
""",
    "zsh": """
_synthgap_runs() { local -a w; w=(${(f)"$(synthgap completion --words runs 2>/dev/null)"}); compadd -a w; }
_synthgap_presets() { local -a w; w=(${(f)"$(synthgap completion --words presets 2>/dev/null)"}); compadd -a w; }
_synthgap_kinds() { local -a w; w=(${(f)"$(synthgap completion --words kinds 2>/dev/null)"}); compadd -a w; }
""",
}


def _completion_words(args, what: str) -> list[str]:
    if what == "presets":
        from synthgap_tui.presets import list_presets

        return [p.name for p in list_presets()]
    if what == "kinds":
        from runners import kinds

        return list(kinds.all_kinds())
    ws = Workspace.at(args.workspace)
    if not ws.index_path.exists():
        return []
    runs = RunStore(ws).list()
    return [r["id"] for r in runs] + sorted({r["name"] for r in runs if r.get("name")})


def cmd_completion(args) -> int:
    """Print the shell completion script (or, for the scripts, the words to complete)."""
    if args.words:
        sys.stdout.write("".join(f"{w}\n" for w in _completion_words(args, args.words)))
        return 0
    install = f"# install: {COMPLETION_INSTALL[args.shell]}\n"
    if args.shell == "fish":
        sys.stdout.write(install + fish_completion(build_parser()))
        return 0
    import shtab

    script = shtab.complete(build_parser(), args.shell, preamble=_COMPLETE_PREAMBLE.get(args.shell, ""))
    if script.startswith(("#!", "#compdef")):  # zsh's #compdef line must stay first
        head, _, rest = script.partition("\n")
        script = f"{head}\n{install}{rest}"
    else:
        script = install + script
    sys.stdout.write(script)
    return 0


COMPLETION_INSTALL = {
    "bash": "synthgap completion bash > ~/.local/share/bash-completion/completions/synthgap",
    "zsh": "synthgap completion zsh > \"${fpath[1]}/_synthgap\"   # then: autoload -U compinit && compinit",
    "fish": "synthgap completion fish > ~/.config/fish/completions/synthgap.fish",
    "tcsh": "synthgap completion tcsh > ~/.synthgap.tcsh && echo 'source ~/.synthgap.tcsh' >> ~/.tcshrc",
}
RUNS_HELP = "runs: ids or prefixes, @last, ls row numbers, EXPERIMENT/NAME or names"


def fish_completion(parser: argparse.ArgumentParser) -> str:
    """A fish script from the parser (shtab has none): subcommands with their help, their
    options, and runs, presets and kinds completed by `synthgap completion --words`."""
    def quote(text: str | None) -> str:
        return "'" + (text or "").replace("\\", "\\\\").replace("'", "\\'") + "'"

    lines = ["complete -c synthgap -f"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, command in sub.choices.items():
        lines.append(f"complete -c synthgap -n __fish_use_subcommand -a {name} -d {quote(helps.get(name))}")
        seen = f"-n '__fish_seen_subcommand_from {name}'"
        for action in command._actions:
            if action.help == argparse.SUPPRESS:
                continue
            longs = [o[2:] for o in action.option_strings if o.startswith("--")]
            shorts = [o[1:] for o in action.option_strings if len(o) == 2]
            if longs or shorts:
                flags = " ".join([f"-l {o}" for o in longs] + [f"-s {o}" for o in shorts])
                lines.append(f"complete -c synthgap {seen} {flags} -d {quote(action.help)}")
            elif getattr(action, "complete", None):
                what = action.complete["bash"].removeprefix("_synthgap_")
                lines.append(f"complete -c synthgap {seen} -a '(synthgap completion --words {what} 2>/dev/null)'")
    return "\n".join(lines) + "\n"


def _completes(action: argparse.Action, what: str) -> None:
    """Mark a positional for shtab: it completes with the preamble's _synthgap_<what>."""
    action.complete = {"bash": f"_synthgap_{what}", "zsh": f"_synthgap_{what}"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synthgap")
    except PackageNotFoundError:
        return "(not installed)"


class _Subcommands(argparse._SubParsersAction):
    """Every subcommand also takes -w/--workspace after its name, as people type it."""

    def add_parser(self, name, **kwargs):
        parser = super().add_parser(name, **kwargs)
        # SUPPRESS: when not given here, the value given before the command stands.
        parser.add_argument("--workspace", "-w", metavar="DIR", default=argparse.SUPPRESS,
                            help="workspace folder (default: $SYNTHGAP_HOME or ~/.synthgap)")
        return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthgap",
        description="Compose, run and compare synthetic-vs-real training experiments.",
        epilog="Exit codes: 0 ok, 1 the command failed (no such run, a bad spec, ...), 2 usage error.",
    )
    parser.add_argument("--workspace", "-w", metavar="DIR",
                        help="workspace folder (default: $SYNTHGAP_HOME or ~/.synthgap)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.set_defaults(func=cmd_tui)
    parser.register("action", "parsers", _Subcommands)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

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
    _completes(p.add_argument("run", help="a run: id or prefix, @last, ls row number, EXPERIMENT/NAME or name"),
               "runs")
    p.add_argument("--all", action="store_true", help="the whole record: index, spec, status, results, provenance")
    p.add_argument("--json", action="store_true", help="print JSON only (everything)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("db", help="maintain the run index")
    dbsub = p.add_subparsers(title="db commands", metavar="ACTION", required=True)
    q = dbsub.add_parser("rebuild", help="recreate runs.json from the run directories")
    q.add_argument("--json", action="store_true", help="print JSON only")
    q.set_defaults(func=cmd_db_rebuild)

    p = sub.add_parser("doctor", help="check Python, torch/CUDA, diffusers, NVML and disk")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("submit", help="queue the runs of an experiment spec (TOML)")
    p.add_argument("spec", help="the experiment spec, e.g. one from `synthgap presets`")
    p.add_argument("--dry-run", action="store_true", help="expand and validate only; queue nothing")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="the experiment's name here (default: the spec's; "
                   "numbered NAME-2, NAME-3 when runs have it already)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("presets", help="the papers' experiments as specs to copy and edit")
    _completes(p.add_argument("name", nargs="?", help="print (or --out) this preset"), "presets")
    p.add_argument("--out", metavar="FILE", help="write the preset to FILE")
    p.add_argument("--force", action="store_true", help="overwrite FILE")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_presets)

    for name, func, text in (
            ("cancel", cmd_cancel, "cancel runs (SIGTERM, then SIGKILL after a grace period)"),
            ("resume", cmd_resume, "continue ended runs from their last checkpoint"),
            ("retry", cmd_retry, "run ended runs again from scratch (old files kept in attempts/)")):
        p = sub.add_parser(name, help=text)
        _completes(p.add_argument("runs", nargs="+", metavar="RUN", help=RUNS_HELP), "runs")
        p.add_argument("--json", action="store_true", help="print each run's outcome as JSON")
        p.set_defaults(func=func)

    p = sub.add_parser("rm", help="delete ended runs (refuses active runs and runs others depend on)")
    _completes(p.add_argument("runs", nargs="+", metavar="RUN", help=RUNS_HELP), "runs")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--force", action="store_true", help="also delete runs that other runs depend on")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("archive", help="hide runs from ls and the app without deleting them")
    _completes(p.add_argument("runs", nargs="+", metavar="RUN", help=RUNS_HELP), "runs")
    p.add_argument("--undo", action="store_true", help="show them again")
    p.add_argument("--json", action="store_true", help="print each run's outcome as JSON")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("gc", help="prune checkpoints of finished runs, printing the bytes freed")
    _completes(p.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (default: every finished run)"),
               "runs")
    p.add_argument("--keep", choices=("last", "final"), help="keep the last checkpoint and the final weights "
                   "('last'), or the final weights only (default: [gc] keep_last in config.toml, else last)")
    p.add_argument("--dry-run", action="store_true", help="only print what would go")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("logs", help="print a run's output (stdout.log), its events, or the supervisor's log")
    _completes(p.add_argument("run", nargs="?", help="the run (not with --supervisor)"), "runs")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing until the run ends (waits for a log not written yet; ctrl+c stops)")
    p.add_argument("-n", "--lines", type=int, metavar="N", help="the last N lines only (then follow with -f)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--events", action="store_true", help="print events.jsonl instead of stdout.log")
    which.add_argument("--job", action="store_true", help="the run's Slurm job output (submitit's log file)")
    which.add_argument("--supervisor", action="store_true", help="the supervisor's log instead of a run's")
    p.set_defaults(func=cmd_logs, check=_logs_usage)

    p = sub.add_parser("supervisor", help="the background process that runs the queue")
    p.add_argument("action", choices=("status", "start", "stop"), nargs="?", default="status",
                   help="status (the default): is it up, and its pid; start it; stop it (runs keep going)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_supervisor)

    p = sub.add_parser("demo", help="the whole study on a CPU in minutes, as the experiment 'demo' of the workspace")
    p.add_argument("--no-tui", action="store_true", help="wait headless and print the results table")
    p.add_argument("--quick", action="store_true", help="a cut-down demo (a smoke test, ~2 minutes)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="CSV/Markdown tables and PNG/SVG figures of runs, or TensorBoard/MLflow logs")
    _completes(p.add_argument("runs", nargs="*", metavar="RUN", help="these runs (default: by --experiment, or all)"),
               "runs")
    p.add_argument("--experiment", "-e", help="every run of this experiment")
    p.add_argument("--format", "-f", choices=("tables", "tensorboard", "mlflow"), default="tables",
                   help="tables and figures (default), TensorBoard event files, or an MLflow file store")
    p.add_argument("--out", metavar="DIR", help="folder to write (default: workspace/exports/<time>)")
    p.add_argument("--json", action="store_true", help="print the written paths as JSON only")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tag", help="add (+tag) and remove (-tag) tags of runs")
    _completes(p.add_argument("words", nargs=argparse.REMAINDER, metavar="RUN... +TAG -TAG",
                              help="runs, then tags to add (+tag) and to remove (-tag)"), "runs")
    p.add_argument("--json", action="store_true", help="print each run's outcome as JSON")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("note", help="a run's note: print it (in a pipe, or --json), write TEXT, or edit it")
    _completes(p.add_argument("run", help="the run"), "runs")
    p.add_argument("text", nargs="?", help="the note; '' removes it")
    p.add_argument("--edit", action="store_true", help="open the note in $VISUAL / $EDITOR (the default at a "
                   "terminal without TEXT)")
    p.add_argument("--json", action="store_true", help="print JSON only (without TEXT: the note)")
    p.set_defaults(func=cmd_note)

    p = sub.add_parser("diff", help="the values (defaults and recipe included) and provenance in which runs differ")
    _completes(p.add_argument("runs", nargs="+", metavar="RUN", help="two runs or more"), "runs")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("kinds", help="the run kinds and their fields")
    _completes(p.add_argument("name", nargs="?", help="list this kind's fields"), "kinds")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_kinds)

    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh, fish, tcsh)",
                       description="Completes commands, options, run ids and names, presets and kinds. "
                       "The script's first line is the command that installs it.")
    p.add_argument("shell", nargs="?", choices=tuple(COMPLETION_INSTALL), default="bash",
                   help="the shell (default: bash)")
    p.add_argument("--words", choices=("runs", "presets", "kinds"), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_completion)

    p = sub.add_parser("tui", help="open the app (the default)")
    p.set_defaults(func=cmd_tui)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    usage = args.check(args) if getattr(args, "check", None) else None
    if usage:
        if getattr(args, "json", False):
            _print_json({"error": usage})
        else:
            print(f"synthgap {args.command}: error: {usage}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (UserError, OSError) as e:
        message = problem(e)  # a full disk or an unwritable folder is one line too
        code = 2 if isinstance(e, UsageError) else 1
        try:
            if getattr(args, "json", False):
                _print_json({"error": message})
            else:
                print(f"synthgap: {message}", file=sys.stderr)
        except OSError:
            pass  # stdout itself is gone (a closed pipe): the exit code still says it
        return code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
