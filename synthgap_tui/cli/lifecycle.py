"""`submit`, `presets`, `cancel`, `resume`, `retry`, `rm`, `archive`, `gc`, `tag` and
`note`: what changes runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synthgap_tui.cli import common
from synthgap_tui.errors import UsageError, UserError
from synthgap_tui.workspace import Workspace


def cmd_submit(args) -> int:
    from synthgap_tui import runs as lifecycle
    from synthgap_tui.errors import SpecError
    from synthgap_tui.specs import apply_overrides, load_spec, parse_spec
    from synthgap_tui.supervisor import ensure_supervisor

    try:
        exp, text = load_spec(args.spec), Path(args.spec).read_text()
        if args.set:  # the kept copy of the spec says what ran, overrides included
            text = apply_overrides(text, args.set, args.spec)
            exp = parse_spec(text, source=args.spec, base_dir=Path(args.spec).parent)
        if args.dry_run:  # writes nothing: the workspace need not exist
            specs, missing = lifecycle.plan(exp, Workspace.at(args.workspace))
            _print_plan(exp, specs, missing, as_json=args.json)
            return 0
        store = common.open_store(args, create=True)
        asked = exp.name
        ids = lifecycle.submit(exp, store, spec_text=text, as_name=args.as_name)
        renamed = exp.name != (args.as_name or asked)
    except SpecError as e:
        raise UserError(f"the spec has {len(e.problems)} problem(s):\n  " + "\n  ".join(e.problems))
    started = ensure_supervisor(store.workspace)
    if args.json:
        common.print_json({"experiment": exp.name, "runs": ids, "renamed_from": asked if renamed else None})
    else:
        from rich.markup import escape

        if renamed:
            common.console().print(f"An experiment {escape(asked)!r} has runs already: these are "
                                   f"[bold]{escape(exp.name)}[/] "
                             "(--as NAME picks the name).")
        common.console().print(f"Queued {len(ids)} run(s) of [bold]{escape(exp.name)}[/]"
                         + ("; supervisor started." if started else "; the supervisor picks them up."))
    return 0


def _print_plan(exp, specs: dict, warnings: list[str], as_json: bool) -> None:
    rows = [{"name": s["name"], "kind": s["kind"], "depends_on": [r.name for r in exp.runs
             if r.name in exp.run(s["name"]).deps], "sweep": s["sweep"]} for s in specs.values()]
    if as_json:
        common.print_json({"experiment": exp.name, "runs": rows, "warnings": warnings})
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(exp.name)}: {len(rows)} run(s) (dry run, nothing queued)", box=None,
                  title_justify="left")
    for col in ("#", "name", "kind", "after"):
        table.add_column(col)
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), escape(r["name"]), r["kind"], escape(", ".join(r["depends_on"]) or "-"))
    console = common.console()
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
            common.print_json([{"name": p.name, "title": p.title, "path": str(p.path)} for p in presets])
        else:
            console = common.console()
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
        common.console().print(f"Wrote {out}; edit its [datasets] paths, then `synthgap submit {out}`.", markup=False)
    else:
        sys.stdout.write(text)
    return 0


def cmd_cancel(args) -> int:
    from synthgap_tui import runs as lifecycle

    return common.each_run(args, lifecycle.cancel)


def _requeue(args, resume: bool) -> int:
    from runners import protocol
    from synthgap_tui import runs as lifecycle
    from synthgap_tui.supervisor import ensure_supervisor

    queued = []

    changes = _field_overrides(getattr(args, "set", None) or [])

    def act(store, run_id):
        attempt = lifecycle.requeue(store, run_id, resume=resume, changes=changes)
        queued.append(run_id)
        return f"queued again (attempt {attempt}" + (", from its last checkpoint)" if resume else ", from scratch)") \
            + (f" with {', '.join(f'{k} = {v!r}' for k, v in changes.items())}" if changes else "")

    if args.failed:  # every failed run of an experiment (a sweep's failed members), with any named
        store = common.open_store(args)
        failed = [r["id"] for r in store.list(experiment=args.failed, state=protocol.FAILED_STATE)]
        if not failed and not args.runs:
            raise UserError(f"experiment {args.failed!r} has no failed runs"
                            + ("" if args.failed in store.experiments() else " (no such experiment; see `synthgap ls`)"))
        args.runs = [*args.runs, *failed]
    elif not args.runs:
        raise UsageError("name the runs (RUN ...), or --failed EXPERIMENT")
    code = common.each_run(args, act)
    if queued:  # the runs that could be queued start, whatever happened to the others
        ensure_supervisor(common.workspace(args))
    return code


def _field_overrides(sets: list[str]) -> dict:
    from synthgap_tui.specs import override_value

    out = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or "." in key:
            raise UsageError(f"--set {item!r}: write FIELD=VALUE (a field of the run), e.g. lr=0.05")
        out[key.strip()] = override_value(raw.strip())
    return out


def cmd_resume(args) -> int:
    return _requeue(args, resume=True)


def cmd_retry(args) -> int:
    return _requeue(args, resume=False)


def cmd_rm(args) -> int:
    """Delete runs (folders and index entries)."""
    from synthgap_tui import cleanup
    from synthgap_tui.formatting import fmt_bytes

    store = common.open_store(args)
    ids = [store.resolve(ref) for ref in args.runs]
    plan = cleanup.plan_removal(store, ids, force=args.force)
    for run_id, why in plan.refused.items():
        print(f"synthgap: {run_id} {why}", file=sys.stderr)
    freed = 0
    if plan.runs:
        names = ", ".join(r.get("name", r["id"]) for r in plan.runs[:5]) + (" …" if len(plan.runs) > 5 else "")
        common.confirm(f"Delete {len(plan.runs)} run(s) ({names}), {fmt_bytes(plan.bytes)}?", args.yes)
        with common.working(f"Removing {len(plan.runs)} run(s)…"):
            freed = cleanup.remove(store, plan)
    if args.json:
        common.print_json({"removed": [r["id"] for r in plan.runs], "refused": plan.refused, "bytes_freed": freed})
    elif plan.runs:
        common.console().print(f"Removed {len(plan.runs)} run(s); freed {fmt_bytes(freed)}.", markup=False)
    return 1 if plan.refused else 0


def cmd_archive(args) -> int:
    from synthgap_tui import cleanup

    return common.each_run(args, lambda store, run_id: cleanup.archive(store, run_id, archived=not args.undo))


def cmd_gc(args) -> int:
    """Prune checkpoints of finished runs, old index copies, code snapshots no run needs
    and job array folders of removed runs."""
    from synthgap_tui import cleanup
    from synthgap_tui.formatting import fmt_bytes

    store = common.open_store(args)
    keep_last = None if args.keep is None else args.keep == "last"
    plan = cleanup.plan_gc(store, [store.resolve(ref) for ref in args.runs] or None, keep_last)
    if plan.files and not args.dry_run:
        common.confirm(f"Delete {plan.describe()}, {fmt_bytes(plan.bytes)}?", args.yes)
        with common.working(f"Deleting {plan.files} file(s)…"):
            cleanup.collect(store, plan)
    if args.json:
        common.print_json({"dry_run": args.dry_run, "bytes_freed": 0 if args.dry_run else plan.bytes,
                           "bytes": plan.bytes, "index_backups": [str(b) for b in plan.backups],
                           "code_snapshots": [str(c) for c in plan.snapshots],
                           "slurm_arrays": [str(a) for a in plan.arrays],
                           "runs": [{"id": p.run_id, "files": [str(f) for f in p.files], "bytes": p.bytes}
                                    for p in plan.pruned if p.files]})
        return 0
    for p in plan.pruned:
        if p.files:
            common.console().print(f"{p.run_id}: {len(p.files)} file(s), {fmt_bytes(p.bytes)}", markup=False)
    if plan.backups:
        common.console().print(f"{len(plan.backups)} index copies older than the newest {plan.keep_backups} "
                               "([store] keep_backups)", markup=False)
    if plan.snapshots:
        common.console().print(f"{len(plan.snapshots)} code snapshot(s) no unfinished run needs", markup=False)
    if plan.arrays:
        common.console().print(f"{len(plan.arrays)} Slurm job array folder(s) whose runs were all removed",
                               markup=False)
    verb = "would free" if args.dry_run else "freed"
    common.console().print(f"{verb} {fmt_bytes(plan.bytes)} "
                           f"(kept final weights{' and last checkpoints' if plan.keep_last else ''})", markup=False)
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
    return common.each_run(args, lambda s, run_id: "tags: " + (" ".join(annotations.tag(s, run_id, add, remove))
                                                          or "(none)"))


def cmd_note(args) -> int:
    """synthgap note RUN [TEXT]; without TEXT, $EDITOR opens the note."""
    from synthgap_tui import annotations

    store = common.open_store(args)
    run_id = store.resolve(args.run)
    text = args.text
    current = (store.get(run_id) or {}).get("note")
    if text is None and not args.edit and (args.json or not sys.stdout.isatty()):
        if args.json:  # reading the note: in a pipe or as JSON, nothing opens
            common.print_json({"id": run_id, "note": current})
        elif current:
            sys.stdout.write(current.rstrip("\n") + "\n")
        return 0
    if text is None:
        text = _edit(current or "")
    annotations.note(store, run_id, text)
    message = "note saved" if text.strip() else "note removed"
    if args.json:
        common.print_json({"id": run_id, "note": text.strip() or None, "message": message})
    else:
        common.console().print(f"{run_id}: {message}", markup=False)
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


def register(sub) -> None:
    """The subcommands of this group, each with its arguments."""
    p = sub.add_parser("submit", help="queue the runs of an experiment spec (TOML)")
    p.add_argument("spec", help="the experiment spec, e.g. one from `synthgap presets`")
    p.add_argument("--dry-run", action="store_true", help="expand and validate only; queue nothing")
    p.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a value of the spec, "
                   "e.g. --set runs.base.lr=0.05 --set defaults.epochs=10 (TOML values; repeatable)")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="the experiment's name here (default: the spec's; "
                   "numbered NAME-2, NAME-3 when runs have it already)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("presets", help="the papers' experiments as specs to copy and edit")
    common.completes(p.add_argument("name", nargs="?", help="print (or --out) this preset"), "presets")
    p.add_argument("--out", metavar="FILE", help="write the preset to FILE")
    p.add_argument("--force", action="store_true", help="overwrite FILE")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_presets)

    for name, func, text in (
            ("cancel", cmd_cancel, "cancel runs (SIGTERM, then SIGKILL after a grace period)"),
            ("resume", cmd_resume, "continue ended runs from their last checkpoint"),
            ("retry", cmd_retry, "run ended runs again from scratch (old files kept in attempts/)")):
        p = sub.add_parser(name, help=text)
        common.completes(p.add_argument("runs", nargs="*" if name != "cancel" else "+", metavar="RUN",
                                        help=common.RUNS_HELP), "runs")
        if name != "cancel":
            p.add_argument("--failed", metavar="EXPERIMENT",
                           help="also every failed run of EXPERIMENT (a sweep's failed members)")
        p.add_argument("--json", action="store_true", help="print each run's outcome as JSON")
        if name == "retry":
            p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="run it again with a field "
                           "changed (TOML values: lr=0.05, augment=dino); the run records what changed")
        p.set_defaults(func=func)

    p = sub.add_parser("rm", help="delete ended runs (refuses active runs and runs others depend on)")
    common.completes(p.add_argument("runs", nargs="+", metavar="RUN", help=common.RUNS_HELP), "runs")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--force", action="store_true", help="also delete runs that other runs depend on")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("archive", help="hide runs from ls and the app without deleting them")
    common.completes(p.add_argument("runs", nargs="+", metavar="RUN", help=common.RUNS_HELP), "runs")
    p.add_argument("--undo", action="store_true", help="show them again")
    p.add_argument("--json", action="store_true", help="print each run's outcome as JSON")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("gc", help="prune checkpoints of finished runs (and old index copies, code snapshots "
                                   "and job array folders nothing needs), printing the bytes freed")
    common.completes(p.add_argument("runs", nargs="*", metavar="RUN",
                                    help="only these runs (default: every finished run)"),
               "runs")
    p.add_argument("--keep", choices=("last", "final"), help="keep the last checkpoint and the final weights "
                   "('last'), or the final weights only (default: [gc] keep_last in config.toml, else last)")
    p.add_argument("--dry-run", action="store_true", help="only print what would go")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("tag", help="add (+tag) and remove (-tag) tags of runs")
    common.completes(p.add_argument("words", nargs=argparse.REMAINDER, metavar="RUN... +TAG -TAG",
                              help="runs, then tags to add (+tag) and to remove (-tag)"), "runs")
    p.add_argument("--json", action="store_true", help="print each run's outcome as JSON")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("note", help="a run's note: print it (in a pipe, or --json), write TEXT, or edit it")
    common.completes(p.add_argument("run", help="the run"), "runs")
    p.add_argument("text", nargs="?", help="the note; '' removes it")
    p.add_argument("--edit", action="store_true", help="open the note in $VISUAL / $EDITOR (the default at a "
                   "terminal without TEXT)")
    p.add_argument("--json", action="store_true", help="print JSON only (without TEXT: the note)")
    p.set_defaults(func=cmd_note)
