"""A stand-in runner for supervisor tests: same command line and files as the real ones.

It runs ``epochs`` steps of ``$FAKE_STEP_S`` seconds each, checkpoints after every
step, resumes from the checkpoint with --resume, stops cleanly on SIGTERM (and USR2) and
fails when the spec's notes say "fail" ("fail-once": on the first attempt only). Every start and end is appended to
``$FAKE_LOG`` with the devices it saw.
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runners import kinds  # noqa: E402
from runners.protocol import EventWriter, write_json_atomic  # noqa: E402

ARTIFACT_PATHS = {"model": "checkpoints/model.pt", "dataset": "data/train"}


def log(line: str) -> None:
    path = os.environ.get("FAKE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    run_dir = Path(args.run_dir)
    spec = json.loads((run_dir / "spec.json").read_text())
    steps, step_s = spec.get("epochs", 3), float(os.environ.get("FAKE_STEP_S", "0.05"))
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGUSR2, lambda *a: stop.append(1))  # Slurm's time-limit warning, as runtime.py
    ckpt = run_dir / "checkpoints" / "state.json"
    ckpt.parent.mkdir(exist_ok=True)
    start = json.loads(ckpt.read_text())["step"] if args.resume and ckpt.exists() else 0
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    log(f"start {spec['name']} {time.time():.4f} [{devices}] {start}")
    ev = EventWriter(run_dir / "events.jsonl")
    ev.emit("start", resumed=args.resume, step=start)
    for step in range(start, steps):
        if stop:
            ev.emit("cancelled", reason="SIGTERM")
            log(f"end {spec['name']} {time.time():.4f} [{devices}] cancelled")
            return 143
        time.sleep(step_s)
        write_json_atomic(ckpt, {"step": step + 1})
        ev.emit("progress", done=step + 1, total=steps, unit="step", rate=1 / step_s)
        ev.emit("epoch", epoch=step, top1=10.0 * (step + 1))
    attempt = json.loads((run_dir / "status.json").read_text()).get("attempt", 1)
    if "fail" in spec.get("notes", "") and not ("fail-once" in spec["notes"] and attempt > 1):
        ev.emit("failed", error="asked to fail")
        log(f"end {spec['name']} {time.time():.4f} [{devices}] failed")
        return 1
    summary = {"top1_mean": 10.0 * steps, "top1_std": 0.0}
    write_json_atomic(run_dir / "results.json", summary)
    for name in kinds.get(spec["kind"]).artifacts:  # what the kind declares, where the real runner puts it
        path = run_dir / ARTIFACT_PATHS.get(name, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"fake")
        ev.emit("artifact", path=str(path), kind=name)
    ev.emit("done", summary=summary)
    log(f"end {spec['name']} {time.time():.4f} [{devices}] done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
