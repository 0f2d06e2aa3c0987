"""Compose an experiment: start from a preset or a saved spec, edit its TOML with
inline validation (the validator `synthgap submit` uses), see the expanded runs
and an estimate of GPU hours, save, submit."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import tomlkit
import tomlkit.exceptions

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Select, Static, TextArea

from runners import kinds, protocol
from synthgap_tui import runs as lifecycle
from synthgap_tui.errors import SpecError
from synthgap_tui.presets import list_presets
from synthgap_tui.specs import Experiment, fields_of, parse_spec

DEBOUNCE_S = 0.3


class Validated(Message):
    def __init__(self, text: str, exp: Experiment | None, problems: list[str], warnings: list[str],
                 estimate: str) -> None:
        super().__init__()
        self.text, self.exp, self.problems, self.warnings, self.estimate = text, exp, problems, warnings, estimate


def estimate_hours(exp: Experiment, finished: list[dict]) -> str:
    """GPU hours from the run times of the workspace's finished runs on GPUs, as each
    kind estimates them (train: seconds per epoch of the same architecture). With
    only CPU runs to go on it says so: CPU hours are no GPU estimate."""
    on_gpu = [r for r in finished if r.get("gpus")]
    measured = on_gpu or finished
    total, known = 0.0, 0
    for run in exp.runs:
        kind = kinds.get(run.kind)
        seconds = kind.estimate(run.params, [r for r in measured if r.get("kind") == run.kind])
        if seconds is not None:
            total += seconds * max(1, run.params.get("gpus", 1))
            known += 1
    if not known:
        return "GPU hours: no finished runs in this workspace to estimate from yet"
    if not on_gpu:
        return (f"no GPU measurements yet: ≈ {total / 3600:.2f} hours for {known} of {len(exp.runs)} runs at the "
                f"pace of {len(finished)} CPU run(s) of this workspace")
    return (f"≈ {total / 3600:.2f} GPU hours for {known} of {len(exp.runs)} runs "
            f"(from {len(on_gpu)} finished GPU runs of this workspace)")


class ComposeScreen(Screen):
    BINDINGS = [
        Binding("escape", "leave", "Back", priority=True),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+g", "submit", "Submit"),
    ]

    def __init__(self, text: str = "", path: Path | None = None) -> None:
        super().__init__()
        self.initial_text = self.saved_text = text
        self.path = path
        self.exp: Experiment | None = None
        self.problems: list[str] = ["(not validated yet)"]
        self.form_run: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Select([], prompt="start from a preset or a saved spec", id="compose-source")
        with Horizontal(id="compose-body"):
            yield TextArea(self.initial_text, id="compose-editor", show_line_numbers=True, tab_behavior="indent")
            with Vertical(id="compose-side"):
                yield Static("", id="compose-status")
                yield DataTable(id="compose-runs", cursor_type="row")
                yield Static("", id="compose-estimate")
                yield Static("", id="form-title")
                yield VerticalScroll(id="compose-form")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#compose-runs", DataTable)
        for col in ("run", "kind", "after"):
            table.add_column(col, key=col)
        self.query_one(TextArea).focus()
        self.validate_text(self.initial_text)
        self.list_sources()

    @work(thread=True, group="compose-sources")
    def list_sources(self) -> None:
        """The presets (a TOML read each) and the saved specs, off the UI thread."""
        options = [(f"preset: {p.name}", str(p.path)) for p in list_presets()]
        saved = sorted(self.app.workspace.specs_dir.glob("*.toml"), reverse=True)
        options += [(f"saved: {p.name}", str(p)) for p in saved[:50]]
        self.app.call_from_thread(self.query_one("#compose-source", Select).set_options, options)

    @on(Select.Changed, "#compose-source")
    def source_chosen(self, event: Select.Changed) -> None:
        if event.value is Select.BLANK:
            return
        path = Path(str(event.value))
        try:
            text = path.read_text()
        except OSError as e:
            self.app.notify(f"cannot read {path}: {e.strerror}", severity="error")
            return
        self.path = path if path.parent == self.app.workspace.specs_dir else None
        self.saved_text = text
        self.query_one(TextArea).load_text(text)

    @on(TextArea.Changed)
    def text_changed(self, event: TextArea.Changed) -> None:
        self.validate_text(event.text_area.text)

    @work(thread=True, exclusive=True, group="compose-validate")
    def validate_text(self, text: str) -> None:
        time.sleep(DEBOUNCE_S)  # a newer keystroke cancels this worker first
        from textual.worker import get_current_worker

        if get_current_worker().is_cancelled:
            return
        exp, problems, warnings, estimate = None, [], [], ""
        if not text.strip():
            problems = ["empty spec: choose a preset above, or type one"]
        else:
            try:
                exp = parse_spec(text, source=self.path.name if self.path else "spec",
                                 base_dir=self.path.parent if self.path else Path.cwd())
                _, warnings = lifecycle.plan(exp, self.app.workspace)
                estimate = estimate_hours(exp, self.app.store_call(lambda: self.app.store.list(state="finished"), []))
            except SpecError as e:
                problems = e.problems
        self.post_message(Validated(text, exp, problems, warnings, estimate))

    def on_validated(self, msg: Validated) -> None:
        self.exp, self.problems = msg.exp, msg.problems
        status = self.query_one("#compose-status", Static)
        if msg.problems:
            status.update("[red]✗[/] " + "\n[red]✗[/] ".join(escape(p) for p in msg.problems[:12]))
        else:
            lines = [f"[green]✓[/] {escape(msg.exp.name)}: {len(msg.exp.runs)} run(s)"]
            lines += [f"[yellow]![/] {escape(w)}" for w in msg.warnings[:6]]
            status.update("\n".join(lines))
        table = self.query_one("#compose-runs", DataTable)
        table.clear()
        for run in (msg.exp.runs if msg.exp else []):
            table.add_row(Text(run.name), run.kind, Text(", ".join(run.deps) or "-"))
        self.query_one("#compose-estimate", Static).update(escape(msg.estimate))
        if self.form_run:
            self.mark_field_problems()

    def action_save(self) -> None:
        text = self.query_one(TextArea).text
        name = self.exp.name if self.exp else "draft"
        if self.path is None:
            safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:60]
            self.path = self.app.workspace.specs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}.toml"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        protocol.write_text_atomic(self.path, text)
        self.saved_text = text
        self.app.notify(f"saved {self.path}")

    def action_leave(self) -> None:
        if self.query_one(TextArea).text == self.saved_text:
            self.app.pop_screen()
            return
        from synthgap_tui.screens.confirm import ConfirmScreen

        self.app.push_screen(ConfirmScreen("Leave the composer?", "Your edits are not saved (ctrl+s saves them "
                                           "to specs/); leaving drops them.", yes="Leave (y)", no="Stay (n)"),
                             lambda leave: self.app.pop_screen() if leave else None)

    def action_submit(self) -> None:
        if self.exp is None or self.problems:
            self.app.notify("fix the spec first: " + (self.problems[0] if self.problems else ""), severity="error")
            return
        self.app.submit_experiment(self.exp, self.query_one(TextArea).text)

    # -- the form: the fields of the run under the cursor ------------------------
    @on(DataTable.RowHighlighted, "#compose-runs")
    async def run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.exp is None or event.cursor_row >= len(self.exp.runs):
            return
        base = self.exp.runs[event.cursor_row].base
        if base != self.form_run:
            await self.build_form(base)

    async def build_form(self, base: str) -> None:
        """One input per field of [runs.BASE]: the ones it sets, then the others it may set."""
        try:
            table = tomllib.loads(self.query_one(TextArea).text)["runs"][base]
        except (tomllib.TOMLDecodeError, KeyError, TypeError):
            return
        kind = kinds.all_kinds().get(table.get("kind"))
        if kind is None:
            return
        self.form_run = base
        schema = fields_of(kind)
        defaults = kind.defaults(table)
        fields = list(dict.fromkeys([k for k in schema if k in table] + list(schema)))
        form = self.query_one("#compose-form", VerticalScroll)
        await form.remove_children()  # before mounting inputs with the same ids
        rows = []
        for name in fields:
            value, default = table.get(name), defaults.get(name)
            label = Label(name, classes="form-label")
            label.tooltip = f"{schema[name].help}\nallowed: {schema[name].allowed()}".strip()
            rows.append(Horizontal(
                label,
                Input(value=_toml_value(value) if value is not None else "",
                      placeholder=f"default: {_toml_value(default)}" if default is not None else "(not set)",
                      id=f"field-{name}", classes="form-input"),
                classes="form-row"))
        await form.mount_all(rows)
        self.query_one("#form-title", Static).update(
            f"[b]\\[runs.{escape(base)}][/b] {escape(kind.name)} fields · enter applies (comments are kept)")
        self.mark_field_problems()

    @on(Input.Submitted, ".form-input")
    def field_submitted(self, event: Input.Submitted) -> None:
        """Write the field into the spec: a TOML literal (4, 0.5, true, [1, 2], "x"),
        or the text as a string; empty removes the field (its default applies)."""
        name = event.input.id.removeprefix("field-")
        text = event.value.strip()
        try:  # tomlkit keeps the user's comments and layout
            doc = tomlkit.parse(self.query_one(TextArea).text)
            run = doc["runs"][self.form_run]
        except (tomlkit.exceptions.TOMLKitError, KeyError) as e:
            self.app.notify(f"fix the TOML first: {e}", severity="error")
            return
        if not text:
            run.pop(name, None)
        else:
            try:
                run[name] = tomlkit.parse(f"v = {text}")["v"]
            except tomlkit.exceptions.TOMLKitError:
                run[name] = text
        self.query_one(TextArea).load_text(tomlkit.dumps(doc))

    def mark_field_problems(self) -> None:
        if not self.form_run:
            return
        for row_input in self.query(".form-input").results(Input):
            name = row_input.id.removeprefix("field-")
            hits = [p for p in self.problems if f"[runs.{self.form_run}" in p and f"field '{name}'" in p]
            row_input.set_class(bool(hits), "-invalid")
            row_input.tooltip = hits[0] if hits else None


def _toml_value(value) -> str:
    return tomlkit.item(value).as_string()
