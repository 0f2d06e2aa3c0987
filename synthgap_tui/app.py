"""The Textual app. ``create_app`` is the one factory the CLI and the tests use."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from synthgap_tui.gpu import NvmlMonitor
from synthgap_tui.screens.runs import RunsScreen
from synthgap_tui.errors import StoreCorrupt, StoreError, UserError, problem
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace


T = TypeVar("T")


class SynthGapApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "SynthGap"
    BINDINGS = [
        Binding("f1,question_mark", "toggle_keys", "Keys", key_display="F1"),
        Binding("f12", "save_screen", "Screenshot", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, workspace: Workspace, gpu_monitor: NvmlMonitor | None = None,
                 start_supervisor: bool = True) -> None:
        super().__init__()
        self.workspace = workspace.ensure()
        self.store = RunStore(workspace)
        self.gpu_monitor = gpu_monitor or NvmlMonitor()
        self.start_supervisor = start_supervisor
        self.sub_title = str(workspace.root)
        self.index_notice_shown = False  # until the index reads again
        self.presets: list = []  # synthgap_tui.presets.Preset, filled by load_presets

    def notify(self, message: str, *, markup: bool = False, **kwargs) -> None:
        """Notices carry run names, paths and errors: text, not markup ('[datasets]', 'freeze[N=8]')."""
        super().notify(message, markup=markup, **kwargs)

    # -- the run index, read from workers --------------------------------------
    def store_call(self, read: Callable[[], T], default: T | None = None) -> T | None:
        """``read()`` from a worker thread; on an index problem, tell the user
        (once, until the index reads again) and return ``default``."""
        try:
            result = read()
        except StoreError as e:
            self.call_from_thread(self.index_problem, e)
            return default
        self.index_notice_shown = False
        return result

    def index_problem(self, error: StoreError) -> None:
        if self.index_notice_shown:
            return
        self.index_notice_shown = True
        if not isinstance(error, StoreCorrupt):
            self.notify(str(error), severity="error", timeout=10)
            return
        from synthgap_tui.screens.index_problem import IndexProblemScreen

        self.push_screen(IndexProblemScreen(str(error)),
                         lambda rebuild: self.rebuild_index() if rebuild else None)

    @work(thread=True, group="rebuild")
    def rebuild_index(self) -> None:
        try:
            n = self.store.rebuild()
        except (StoreError, OSError) as e:
            self.call_from_thread(self.notify, f"rebuild failed: {problem(e)}", severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, f"index rebuilt from {n} run folder(s)")

    def on_mount(self) -> None:
        self.push_screen(RunsScreen())
        if self.start_supervisor:
            self.wake_supervisor()
        self.load_presets()
        self.check_disk()
        self.set_interval(60, self.check_disk)
        self.set_timer(2.0, self.check_index)  # after the first screenful: it lists every run folder

    @work(thread=True, group="disk", exclusive=True)
    def check_disk(self) -> None:
        """The header warns while the workspace's filesystem is low on space (statvfs can
        hang on a network filesystem: off the UI thread)."""
        from synthgap_tui.doctor import low_space

        warning = low_space(self.workspace)
        self.call_from_thread(self._show_disk_warning, f"  ⚠ {warning.split(' in ')[0]}" if warning else "")

    @work(thread=True, group="index-check")
    def check_index(self) -> None:
        """Run folders the index does not list (a lost or replaced index): said once, with the way back."""
        from synthgap_tui.doctor import index_check

        check = index_check(self.workspace, hint='the palette\'s "Rebuild the run index" brings them back')
        if check.level == "WARN":
            self.call_from_thread(self.notify, check.message, severity="warning", timeout=30)

    def _show_disk_warning(self, warning: str) -> None:
        base = self.sub_title.split("  ⚠ ")[0]
        self.sub_title = base + warning

    @work(thread=True, group="presets")
    def load_presets(self) -> None:
        """The palette's preset commands, read once off the UI thread (a TOML each)."""
        from synthgap_tui.presets import list_presets

        self.presets = list_presets()

    @work(thread=True, group="supervisor")
    def wake_supervisor(self) -> None:
        """Runs left queued (a reboot, a killed supervisor) start moving again."""
        from synthgap_tui.supervisor import ensure_supervisor

        if self.store_call(lambda: self.store.list(state=["queued", "starting", "running"])):
            ensure_supervisor(self.workspace)

    def action_toggle_keys(self) -> None:
        """F1 / ?: every key of the current screen (Textual's key panel), and away again."""
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    # -- navigation ----------------------------------------------------------
    def open_run(self, run_id: str) -> None:
        from synthgap_tui.screens.run_detail import RunScreen

        self.push_screen(RunScreen(run_id))

    def action_compose_experiment(self, text: str = "", path: Path | None = None) -> None:
        from synthgap_tui.screens.compose import ComposeScreen

        self.push_screen(ComposeScreen(text, path))

    def open_composer_for_run(self, run_id: str) -> None:
        from runners import protocol

        spec = protocol.read_json(self.workspace.run_file(run_id, protocol.SPEC_FILE), {}) or {}
        path = Path(spec.get("spec_file", ""))
        if not path.is_file():
            self.notify(f"the spec this run came from ({path}) is gone", severity="error")
            return
        self.action_compose_experiment(path.read_text())

    def action_compare_selected(self) -> None:
        from synthgap_tui.screens.compare import CompareScreen

        screen = self.screen
        ids = sorted(getattr(screen, "marked", set()))
        title = f"{len(ids)} marked runs"
        if not ids and isinstance(screen, RunsScreen):
            run = screen.runs.get(screen.selected_run_id() or "")
            if not run:
                self.notify("mark runs with space, or put the cursor on a run of an experiment")
                return
            ids = [r["id"] for r in screen.runs.values() if r.get("experiment") == run.get("experiment")]
            title = run.get("experiment", "experiment")
        self.push_screen(CompareScreen(ids, title))

    def action_toggle_gpu_panel(self) -> None:
        if isinstance(self.screen, RunsScreen):
            self.screen.toggle_gpu_panel()

    # -- actions on runs (blocking work in workers) ----------------------------
    def confirm_lifecycle(self, action: str, run_ids: list[str]) -> None:
        """Act on runs; acting on several marked runs, or retrying (it moves the
        old attempt aside), asks first."""
        if not run_ids:
            return
        if action != "retry" and len(run_ids) == 1:
            self.lifecycle_action(action, run_ids)
            return
        from synthgap_tui.screens.confirm import ConfirmScreen

        what = {"cancel": "Cancel", "resume": "Resume", "retry": "Retry from scratch"}[action]
        body = {"cancel": "Running runs get SIGTERM, save a checkpoint and stop; queued ones never start.",
                "resume": "Each continues from its last checkpoint.",
                "retry": "Each starts over; what the last attempt wrote moves to attempts/N/."}[action]
        self.push_screen(ConfirmScreen(f"{what} {len(run_ids)} run{'s' if len(run_ids) > 1 else ''}?",
                                       f"{self.run_names(run_ids)}\n\n{body}"),
                         lambda yes: self.lifecycle_action(action, run_ids) if yes else None)

    def run_names(self, run_ids: list[str], most: int = 8) -> str:
        """What a confirmation acts on, by name (the index as the runs screen last read it)."""
        from synthgap_tui.screens.runs import RunsScreen as Runs

        known = next((s.runs for s in self.screen_stack if isinstance(s, Runs)), {})
        names = [known.get(i, {}).get("name", i) for i in run_ids]
        return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")

    def annotate(self, what: str, run_ids: list[str], note: str = "") -> None:
        """Ask for tags ('+a -b') or a note (starting from ``note``, the one the
        screen already has), then write them on the runs."""
        if not run_ids:
            return
        from synthgap_tui.screens.prompt import PromptScreen

        many = f" of {len(run_ids)} runs" if len(run_ids) > 1 else ""
        if what == "tag":
            screen = PromptScreen(f"Tags{many}", hint="+tag adds, -tag removes; enter applies, escape cancels")
        else:
            screen = PromptScreen(f"Note{many}", note, multiline=True,
                                  hint="ctrl+s saves (an empty note removes it), escape cancels")
        self.push_screen(screen, lambda text: self.write_annotations(what, run_ids, text) if text is not None
                         else None)

    @work(thread=True, group="annotate")
    def write_annotations(self, what: str, run_ids: list[str], text: str) -> None:
        from synthgap_tui import annotations

        try:
            for run_id in run_ids:
                if what == "tag":
                    tags = annotations.tag(self.store, run_id, *annotations.parse_ops(text.split()))
                    message = f"{run_id}: tags {' '.join(tags) or '(none)'}"
                else:
                    annotations.note(self.store, run_id, text)
                    message = f"{run_id}: note saved" if text.strip() else f"{run_id}: note removed"
                self.call_from_thread(self.notify, message)
        except (UserError, OSError) as e:
            self.call_from_thread(self.notify, problem(e), severity="error")

    @work(thread=True, group="lifecycle")
    def lifecycle_action(self, action: str, run_ids: list[str]) -> None:
        from synthgap_tui import runs as lifecycle
        from synthgap_tui.supervisor import ensure_supervisor

        for run_id in run_ids:
            try:
                if action == "cancel":
                    msg = lifecycle.cancel(self.store, run_id)
                else:  # resume or retry
                    attempt = lifecycle.requeue(self.store, run_id, resume=action == "resume")
                    ensure_supervisor(self.workspace)
                    msg = f"queued again (attempt {attempt})"
                self.call_from_thread(self.notify, f"{run_id}: {msg}")
            except (StoreError, OSError) as e:
                self.call_from_thread(self.notify, problem(e), severity="error")

    @work(thread=True, group="annotate")
    def archive_runs(self, run_ids: list[str], archived: bool = True) -> None:
        from synthgap_tui import cleanup

        for run_id in run_ids:
            try:
                self.call_from_thread(self.notify, f"{run_id}: {cleanup.archive(self.store, run_id, archived)}")
            except (UserError, OSError) as e:
                self.call_from_thread(self.notify, problem(e), severity="error")

    # Deleting asks first, with what it found in a worker (sizes, refusals).
    def remove_runs(self, run_ids: list[str]) -> None:
        if run_ids:
            self._plan_cleanup("rm", run_ids)

    def action_gc(self) -> None:
        self._plan_cleanup("gc", None)

    @work(thread=True, group="cleanup")
    def _plan_cleanup(self, what: str, run_ids: list[str] | None) -> None:
        from synthgap_tui import cleanup
        from synthgap_tui.formatting import fmt_bytes

        try:
            if what == "rm":
                plan = cleanup.plan_removal(self.store, run_ids)
                refused = "".join(f"\nkept: {run_id} {why}" for run_id, why in plan.refused.items())
                n, size = len(plan.runs), plan.bytes
                names = ", ".join(r.get("name", r["id"]) for r in plan.runs[:8]) + (" …" if n > 8 else "")
                title = f"Delete {n} run(s)?"
                body = f"{names}\n\n{fmt_bytes(size)} of run folders go for good.{refused}"

                def act() -> int:
                    return cleanup.remove(self.store, plan)
            else:
                collection = cleanup.plan_gc(self.store)
                n = collection.files
                title = "Prune the workspace?"
                body = (f"Deletes {collection.describe()}, {fmt_bytes(collection.bytes)}; each run keeps its "
                        f"final weights{' and its last checkpoint' if collection.keep_last else ''} (synthgap gc).")

                def act() -> int:
                    return cleanup.collect(self.store, collection)
        except (UserError, SystemExit) as e:
            self.call_from_thread(self.notify, str(e), severity="error", timeout=10)
            return
        if not n:
            message = f"nothing deleted:{refused}" if what == "rm" else "nothing to prune"
            self.call_from_thread(self.notify, message, severity="warning" if what == "rm" else "information")
            return
        from synthgap_tui.screens.confirm import ConfirmScreen

        self.call_from_thread(self.push_screen, ConfirmScreen(title, body),
                              lambda yes: self._clean_up(what, act) if yes else None)

    @work(thread=True, group="cleanup")
    def _clean_up(self, what: str, act: Callable[[], int]) -> None:
        from synthgap_tui.formatting import fmt_bytes

        try:
            freed = act()
        except (UserError, OSError) as e:
            self.call_from_thread(self.notify, f"{what} failed: {problem(e)}", severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, f"freed {fmt_bytes(freed)}")

    @work(thread=True, group="supervisor")
    def stop_supervisor(self) -> None:
        from synthgap_tui.supervisor import stop_supervisor

        try:
            stopped = stop_supervisor(self.workspace)
        except UserError as e:
            self.call_from_thread(self.notify, str(e), severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, "supervisor stopped; runs keep going" if stopped
                              else "the supervisor was not running")

    @work(thread=True, group="submit")
    def submit_experiment(self, exp, text: str) -> None:
        from synthgap_tui import runs as lifecycle
        from synthgap_tui.errors import SpecError
        from synthgap_tui.supervisor import ensure_supervisor

        asked = exp.name
        try:
            ids = lifecycle.submit(exp, self.store, spec_text=text)
        except (SpecError, StoreError, OSError) as e:
            self.call_from_thread(self.notify, problem(e), severity="error", timeout=10)
            return
        ensure_supervisor(self.workspace)
        self.call_from_thread(self._after_submit, exp.name, len(ids), asked)

    def _after_submit(self, name: str, n: int, asked: str) -> None:
        self.notify(f"queued {n} run(s) of {name}"
                    + (f" ({asked!r} has runs already: this one is numbered)" if name != asked else ""))
        while not isinstance(self.screen, RunsScreen):
            self.pop_screen()

    @work(thread=True, group="export")
    def export_runs(self, run_ids: list[str], title: str, fmt: str = "tables") -> None:
        """Tables and figures (fmt "tables"), or TensorBoard / MLflow logs, into exports/<time>/."""
        from synthgap_tui import analysis, trackers

        records = self.store_call(lambda: [r for r in map(self.store.get, run_ids) if r])
        if not records:
            return
        out = self.workspace.root / "exports" / time.strftime("%Y%m%d-%H%M%S")
        try:
            if fmt == "tables":
                written = analysis.export(analysis.load_runs(self.workspace, records), out, title)
                message = f"exported {len(written)} files to {out}"
            else:
                out /= "mlruns" if fmt == "mlflow" else "tensorboard"
                trackers.export(self.workspace, records, out, fmt)
                message = f"exported {len(records)} run(s); open with: {trackers.how_to_open(fmt, out)}"
        except (OSError, UserError) as e:
            self.call_from_thread(self.notify, f"export failed: {e}", severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, message, timeout=10)

    def _export_to(self, fmt: str) -> None:
        """The runs the screen shows: compared runs, the open run, or marked / under the cursor."""
        screen = self.screen
        ids = list(getattr(screen, "run_ids", None) or ([screen.run_id] if hasattr(screen, "run_id") else [])
                   or (screen.targets() if isinstance(screen, RunsScreen) else []))
        if not ids:
            self.notify("mark runs with space, or open a run or a comparison first")
            return
        self.export_runs(ids, f"{len(ids)} runs", fmt)

    def _set_filter(self, text: str) -> None:
        while not isinstance(self.screen, RunsScreen):
            self.pop_screen()
        self.screen.query_one("#filter").value = text

    def action_save_screen(self) -> None:
        out = self.workspace.root / "exports"
        out.mkdir(parents=True, exist_ok=True)
        path = self.save_screenshot(path=str(out))
        self.notify(f"screenshot saved to {path}")

    # -- command palette -------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Compose experiment", "Open the composer (c)", self.action_compose_experiment)
        yield SystemCommand("Compare", "Compare marked runs, or the experiment under the cursor (x)",
                            self.action_compare_selected)
        yield SystemCommand("GPU panel", "Show or hide GPUs, CPU and RAM (g)", self.action_toggle_gpu_panel)
        yield SystemCommand("Screenshot", "Save an SVG of the screen to exports/ (F12)", self.action_save_screen)
        yield SystemCommand("Rebuild the run index", "Recreate runs.sqlite from the run folders (synthgap db rebuild)",
                            self.rebuild_index)
        for fmt, tool in (("tensorboard", "TensorBoard"), ("mlflow", "MLflow")):
            yield SystemCommand(f"Export to {tool}", f"The marked, open or compared runs' curves as {tool} logs "
                                f"(synthgap export --format {fmt})", lambda f=fmt: self._export_to(f))
        yield SystemCommand("Prune the workspace", "Delete checkpoints of finished runs (final weights kept), old "
                            "index copies, unused code snapshots and job arrays (synthgap gc)", self.action_gc)
        if isinstance(screen, RunsScreen) and (failed := screen.failed_of_experiment()):
            experiment, run_ids = failed
            yield SystemCommand(f"Retry the failed runs of {experiment}",
                                f"{len(run_ids)} failed run(s), from scratch (synthgap retry --failed {experiment})",
                                lambda: self.confirm_lifecycle("retry", run_ids))
        yield SystemCommand("Show archived runs", "Filter the runs table to archived runs (archived:yes)",
                            lambda: self._set_filter("archived:yes"))
        yield SystemCommand("Stop the supervisor", "The queue stops moving; running runs keep going "
                            "(synthgap supervisor stop)", self.stop_supervisor)
        for preset in self.presets:
            yield SystemCommand(f"Preset: {preset.name}", f"Compose from the {preset.title} preset",
                                lambda p=preset: self.action_compose_experiment(p.path.read_text()))


def create_app(workspace: Workspace, gpu_monitor: NvmlMonitor | None = None,
               start_supervisor: bool = True) -> SynthGapApp:
    return SynthGapApp(workspace, gpu_monitor=gpu_monitor, start_supervisor=start_supervisor)
