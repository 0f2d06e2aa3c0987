"""The index at N runs (100,000 unless given): RunStore.update against plain TinyDB,
`synthgap ls -n 50` and `synthgap ls --json`.

Both stores hold the same N records. The reference is what one would write
with TinyDB out of the box: JSONStorage and ``table.update(fields,
Query().id == run_id)`` (timed over fewer updates: each rewrites the whole
file). Targets at 100,000 runs: update median <= 15 ms, `ls -n 50` <= 0.4 s,
`ls --json` <= 1.0 s (wall, interpreter start included).
Last line: ``store update speedup: X.XXx``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinydb import Query, TinyDB

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthgap_tui.store import RunStore  # noqa: E402

N_UPDATES, N_REFERENCE_UPDATES = 60, 5


def record(i: int) -> dict:
    return {"name": f"freeze[freeze_layers={i % 17 + 1}]-{i}", "experiment": f"exp{i // 50}",
            "kind": "train", "state": "finished", "progress": 1.0, "gpus": [i % 8],
            "started": 1.7e9 + i, "ended": 1.7e9 + i + 3600, "depends_on": [],
            "summary": {"top1_mean": 64.8, "top1_std": 0.1, "top5_mean": 87.6, "top5_std": 0.1,
                        "train_loss_mean": 0.696, "epochs": 100}}


def timed(fn, ids) -> list[float]:
    out = []
    for i, rid in enumerate(ids):
        t = time.perf_counter()
        fn(rid, i)
        out.append(time.perf_counter() - t)
    return out


def cli_wall(ws: Path, *args: str, repeat: int = 5) -> float:
    walls = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "synthgap_tui.cli", "-w", str(ws), *args],
                       check=True, stdout=subprocess.DEVNULL, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        walls.append(time.perf_counter() - t)
    return statistics.median(walls)


def main() -> None:
    n_runs = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory(dir=REPO) as tmp:  # the workspace's disk, not a tmpfs
        ws = Path(tmp) / "ws"
        store = RunStore(ws)
        ids = store.create_many([record(i) for i in range(n_runs)])
        plain = TinyDB(Path(tmp) / "plain.json").table("runs")
        plain.insert_multiple(store.list())
        picks = [ids[(i * 7919) % n_runs] for i in range(N_UPDATES)]

        ours = timed(lambda rid, i: store.update(rid, state="running", progress=i / N_UPDATES), picks)
        skip = N_UPDATES - N_REFERENCE_UPDATES  # the same last updates, with the same values
        ref = timed(lambda rid, i: plain.update({"state": "running", "progress": (skip + i) / N_UPDATES},
                                                Query().id == rid), picks[-N_REFERENCE_UPDATES:])
        assert store.get(picks[-1])["progress"] == plain.get(Query().id == picks[-1])["progress"]
        last50, everything = cli_wall(ws, "ls", "-n", "50"), cli_wall(ws, "ls", "--json")

    ours_ms, ref_ms = 1000 * statistics.median(ours), 1000 * statistics.median(ref)
    print(f"runs in index: {n_runs}, updates timed: {N_UPDATES} (reference: {N_REFERENCE_UPDATES})")
    print(f"RunStore.update (lock, one-row transaction, fsync): median {ours_ms:.1f} ms, max "
          f"{1000 * max(ours):.1f} ms (target <= 15 ms)")
    print(f"TinyDB table.update(Query().id == x):               median {ref_ms:.1f} ms")
    print(f"synthgap ls -n 50 wall time (with interpreter start): median {last50:.3f} s (target <= 0.4 s)")
    print(f"synthgap ls --json wall time (with interpreter start): median {everything:.3f} s (target <= 1.0 s)")
    print(f"store update speedup: {ref_ms / ours_ms:.2f}x")


if __name__ == "__main__":
    main()
