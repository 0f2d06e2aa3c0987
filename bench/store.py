"""Status updates at 10,000 runs: RunStore.update against plain TinyDB, and `synthgap ls --json`.

Both stores hold the same 10,000 records. The reference is what one would
write with TinyDB out of the box: JSONStorage and ``table.update(fields,
Query().id == run_id)``. Last line: ``store update speedup: X.XXx``.
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

N_RUNS = 10_000
N_UPDATES = 60


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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        store = RunStore(ws)
        ids = store.create_many([record(i) for i in range(N_RUNS)])
        plain = TinyDB(Path(tmp) / "plain.json").table("runs")
        plain.insert_multiple(store.list())
        picks = [ids[(i * 7919) % N_RUNS] for i in range(N_UPDATES)]

        ours = timed(lambda rid, i: store.update(rid, state="running", progress=i / N_UPDATES), picks)
        ref = timed(lambda rid, i: plain.update({"state": "running", "progress": i / N_UPDATES},
                                                Query().id == rid), picks)
        assert store.get(picks[-1])["progress"] == plain.get(Query().id == picks[-1])["progress"]

        walls = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "synthgap_tui.cli", "-w", str(ws), "ls", "--json"],
                           check=True, stdout=subprocess.DEVNULL, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
            walls.append(time.perf_counter() - t)

    ours_ms, ref_ms = 1000 * statistics.median(ours), 1000 * statistics.median(ref)
    print(f"runs in index: {N_RUNS}, updates timed: {N_UPDATES}")
    print(f"RunStore.update (lock, fsync, atomic replace): median {ours_ms:.1f} ms")
    print(f"TinyDB table.update(Query().id == x):           median {ref_ms:.1f} ms")
    print(f"synthgap ls --json wall time (with interpreter start): median {statistics.median(walls):.3f} s "
          f"(target < 0.8 s)")
    print(f"store update speedup: {ref_ms / ours_ms:.2f}x")


if __name__ == "__main__":
    main()
