"""The app at N runs (100,000 unless given): launch to the first rendered runs screen,
to every run read, a filter over all runs, memory, and CPU use while one run
streams 200 events per second into the open run screen.

The app runs headless in a child process (the same code path as `synthgap`);
the parent writes the events and reads the child's CPU time and memory with
psutil. Targets at 100,000 runs: first render <= 1.0 s, filter <= 200 ms (off
the UI thread), memory <= 400 MB. Last line: ``tui: first render X.XX s
(target < 1.0), cpu X.X% of a core at 200 events/s (target < 10%)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RATE, SECONDS = 200, 10.0
FILTER = "exp7"  # a word: every run's name, id, experiment, notes are searched


def probe(ws: str, run_id: str, n_runs: int) -> None:
    """Child: open the app, report the first rendered runs screen, every run read,
    a filter over all of them, then watch run_id."""
    from synthgap_tui.app import create_app
    from synthgap_tui.workspace import Workspace

    app = create_app(Workspace(Path(ws)), start_supervisor=False)
    step, filtered_at = "render", 0.0

    def report(**what) -> None:
        print(json.dumps(what), flush=True)

    def check():
        nonlocal step, filtered_at
        screen = app.screen
        if type(screen).__name__ != "RunsScreen":
            return
        table = screen.query_one("#runs")
        if step == "render" and table.row_count >= min(n_runs, 30):
            app.call_after_refresh(lambda: report(rendered=time.time(), torch="torch" in sys.modules))
            step = "load"
        elif step == "load" and not screen.partial and table.row_count == n_runs:
            report(loaded=time.time())
            filtered_at, step = time.time(), "filter"
            screen.query_one("#filter").value = FILTER
        elif step == "filter" and table.row_count < n_runs:
            report(filtered=time.time() - filtered_at, rows=table.row_count)
            timer.stop()
            app.open_run(run_id)
            report(watching=time.time())

    timer = None

    def on_ready():
        nonlocal timer
        timer = app.set_interval(0.005, check)

    app.call_later(on_ready)
    app.run(headless=True, size=(120, 40))


def main() -> None:
    n_runs = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    sys.path.insert(0, str(REPO))
    from runners.protocol import EventWriter
    from synthgap_tui.store import RunStore
    from synthgap_tui.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws").ensure()
        store = RunStore(ws)
        ids = store.create_many([{"name": f"freeze[freeze_layers={i % 17 + 1}]-{i}", "experiment": f"exp{i // 100}",
                                  "kind": "train", "state": "finished", "progress": 1.0, "gpus": [i % 8],
                                  "started": 1.7e9, "ended": 1.7e9 + 3600,
                                  "summary": {"top1_mean": 60 + i % 20, "top1_std": 0.2}} for i in range(n_runs)])
        live = ids[-1]
        store.update(live, state="running", ended=None)
        ws.run_dir(live).mkdir(parents=True)
        (ws.run_dir(live) / "spec.json").write_text(json.dumps({"id": live, "name": "live", "kind": "train"}))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t0 = time.time()
        child = subprocess.Popen([sys.executable, __file__, "--probe", str(ws.root), live, str(n_runs)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = json.loads(child.stdout.readline())
        launch = first["rendered"] - t0
        loaded = json.loads(child.stdout.readline())["loaded"] - t0
        proc = psutil.Process(child.pid)
        memory = proc.memory_info().rss
        filtered = json.loads(child.stdout.readline())
        json.loads(child.stdout.readline())
        time.sleep(1.0)  # let the run screen settle
        writer = EventWriter(ws.events_path(live))
        cpu0, wall0 = sum(proc.cpu_times()[:2]), time.time()
        n = 0
        while time.time() - wall0 < SECONDS:
            target = int((time.time() - wall0) * RATE)
            while n < target:
                writer.emit("train_step", step=n, epoch=n // 1000, loss=2.0 / (1 + n / 500), lr=0.1,
                            images_per_s=1000.0)
                if n % 20 == 0:
                    writer.emit("progress", done=n, total=100000, unit="step", rate=RATE, eta=1000)
                n += 1
            time.sleep(0.005)
        cpu = (sum(proc.cpu_times()[:2]) - cpu0) / (time.time() - wall0)
        child.terminate()
        child.wait(10)
    print(f"runs in workspace: {n_runs}; torch imported by the app: {first['torch']}")
    print(f"launch to first rendered runs screen: {launch:.2f} s (includes interpreter start; target <= 1.0 s)")
    print(f"launch to every run read (filter and sort over all of them): {loaded:.2f} s")
    print(f"memory once every run is read: {memory / 2**20:.0f} MiB (target <= 400 MB)")
    print(f"filter {FILTER!r} over all runs, typed to shown: {1000 * filtered['filtered']:.0f} ms, "
          f"{filtered['rows']} rows (target <= 200 ms, off the UI thread)")
    print(f"app CPU while a run streams {n / SECONDS:.0f} events/s: {100 * cpu:.1f}% of a core")
    print(f"tui: first render {launch:.2f} s (target < 1.0), cpu {100 * cpu:.1f}% of a core at {RATE} events/s "
          f"(target < 10%)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        probe(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
