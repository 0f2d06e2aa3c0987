"""GPUs (NVML, polled in a worker about once a second), their processes mapped to
runs, and the host's CPU and RAM. No driver or an NVML error is a calm notice."""

from __future__ import annotations

import time

import psutil
from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from runners import protocol
from synthgap_tui import launchers
from synthgap_tui.formatting import fmt_bytes
from synthgap_tui.gpu import GpuReport
from synthgap_tui.runs import read_status

POLL_S = 1.0


class GpuSample(Message):
    def __init__(self, report: GpuReport, cpu: float, ram_used: int, ram_total: int, owners: dict[int, str],
                 elsewhere: list[dict] = ()) -> None:
        super().__init__()
        self.report, self.cpu, self.ram_used, self.ram_total, self.owners = report, cpu, ram_used, ram_total, owners
        self.elsewhere = elsewhere  # active runs on other nodes (a scheduler's): their own memory reports


def run_of_pid(pid: int, run_pids: dict[int, str]) -> str | None:
    """The run a GPU process belongs to: the pid itself or one of its parents
    (torchrun workers are children of the runner)."""
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.parents()]:
            if p.pid in run_pids:
                return run_pids[p.pid]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


class GpuPanel(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("", id="gpu-host")
        yield DataTable(id="gpu-table", cursor_type="none", show_cursor=False)
        yield Static("", id="gpu-notice")
        yield Static("", id="gpu-elsewhere")

    def on_mount(self) -> None:
        table = self.query_one("#gpu-table", DataTable)
        for col in ("gpu", "name", "memory", "util", "temp", "power", "processes"):
            table.add_column(col, key=col)
        self.poll()

    @work(thread=True, exclusive=True, group="gpu-poll")
    def poll(self) -> None:
        me = get_current_worker()
        psutil.cpu_percent()  # prime the counter
        while not me.is_cancelled:
            if not self.display:  # hidden: nothing to poll for
                time.sleep(POLL_S)
                continue
            report = self.app.gpu_monitor.snapshot()
            run_pids, active = {}, self._active_runs()
            for r in active:
                launcher, handle = launchers.of_status(read_status(self.app.workspace, r["id"]))
                run_pids.update(dict.fromkeys(launcher.pids(handle), r.get("name", r["id"])))
            owners = {p.pid: run_of_pid(p.pid, run_pids) for g in report.gpus for p in g.processes}
            mem = psutil.virtual_memory()
            elsewhere = [r for r in active if (r.get("where") or {}).get("job")]
            self.post_message(GpuSample(report, psutil.cpu_percent(), mem.used, mem.total, owners, elsewhere))
            time.sleep(POLL_S)

    def _active_runs(self) -> list[dict]:
        return self.app.store_call(lambda: self.app.store.list(state=list(protocol.ACTIVE_STATES)), [])

    def on_gpu_sample(self, msg: GpuSample) -> None:
        self.query_one("#gpu-host", Static).update(
            f"CPU {msg.cpu:.0f}%  ·  RAM {fmt_bytes(msg.ram_used)} / {fmt_bytes(msg.ram_total)}"
            + (f"  ·  driver {msg.report.driver}" if msg.report.driver else ""))
        table = self.query_one("#gpu-table", DataTable)
        table.clear()
        for g in msg.report.gpus:
            procs = ", ".join(f"{msg.owners.get(p.pid) or p.pid} {fmt_bytes(p.used_memory)}" for p in g.processes)
            table.add_row(str(g.index), g.name, f"{fmt_bytes(g.memory_used)} / {fmt_bytes(g.memory_total)}",
                          "-" if g.utilization is None else f"{g.utilization}%",
                          "-" if g.temperature is None else f"{g.temperature}°C",
                          "-" if g.power_w is None else f"{g.power_w:.0f} W", escape(procs) or "-")
        notice = ""
        if msg.report.error:
            notice = f"GPU monitoring unavailable: {msg.report.error}. Runs use the CPU or the GPUs in config.toml."
        elif not msg.report.gpus:
            notice = "No GPUs found: runs use the CPU."
        self.query_one("#gpu-notice", Static).update(escape(notice))
        self.query_one("#gpu-table", DataTable).display = bool(msg.report.gpus)
        # NVML sees this box only; runs placed by a scheduler report their memory in `gpu` events.
        self.query_one("#gpu-elsewhere", Static).update(escape("  ·  ".join(
            f"{r.get('name', r['id'])} on {(r['where'].get('node') or 'a node')}: {fmt_bytes(r.get('gpu_memory'))}"
            for r in msg.elsewhere)))
