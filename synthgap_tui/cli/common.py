"""What every command group shares: the workspace and its index, printing (tables,
JSON, a spinner), confirmations and acting on several runs."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable

from synthgap_tui.errors import UserError
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace


def workspace(args, create: bool = False) -> Workspace:
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


def open_store(args, create: bool = False) -> RunStore:
    store = RunStore(workspace(args, create))
    moved = store.migrate_legacy()
    if moved is not None:
        console(stderr=True).print(store.migration_message(), markup=False)
    return store


def console(stderr: bool = False):
    from rich.console import Console

    # In a pipe, lines are not folded at 80 columns: scripts get whole lines.
    return Console(stderr=stderr, highlight=False, soft_wrap=not (sys.stderr if stderr else sys.stdout).isatty())


def print_json(data) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def print_table(header: list[str], rows: list[list[str]], title: str | None = None, keep: int = 2,
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
    console().print(table)


def state_markup(state: str) -> str:
    from synthgap_tui.formatting import STATE_STYLE

    return f"[{STATE_STYLE.get(state, 'default')}]{state}[/]"


def readable(data: dict, prefix: str = "") -> list[str]:
    """TOML-like lines: ``key = value`` with JSON values (true, null, "text")."""
    import json

    lines = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            lines += readable(value, f"{name}.")
        else:
            lines.append(f"{name} = {json.dumps(value, ensure_ascii=False, default=str)}")
    return lines


def each_run(args, act) -> int:
    """``act(store, run_id)`` for every named run: one failing does not stop the
    others; each outcome is printed; exit 1 if any failed."""
    store = open_store(args)
    results = []
    for ref in args.runs:
        try:
            run_id = store.resolve(ref)
            results.append({"run": ref, "id": run_id, "ok": True, "message": act(store, run_id)})
        except UserError as e:
            results.append({"run": ref, "ok": False, "message": str(e)})
    if args.json:
        print_json(results)
    else:
        for r in results:
            line = f"{r.get('id', r['run'])}: {r['message']}"
            (console() if r["ok"] else console(stderr=True)).print(line if r["ok"] else f"synthgap: {line}",
                                                                     markup=False)
    return 0 if all(r["ok"] for r in results) else 1


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; refuse in a pipe unless --yes (nothing is changed)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{question} Not a terminal: pass --yes to confirm.")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise UserError("nothing was changed")


@contextlib.contextmanager
def working(text: str):
    """A spinner on stderr while a slow step runs, at a terminal only (pipes stay clean)."""
    if not sys.stderr.isatty():
        yield
        return
    with console(stderr=True).status(text):
        yield


def completes(action: argparse.Action, what: str) -> None:
    """Mark a positional for shtab: it completes with the preamble's _synthgap_<what>."""
    action.complete = {"bash": f"_synthgap_{what}", "zsh": f"_synthgap_{what}"}


RUNS_HELP = "runs: ids or prefixes, @last, ls row numbers, EXPERIMENT/NAME or names"
