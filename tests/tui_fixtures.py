"""A workspace with finished, failed and queued runs written the way runners and the supervisor write them."""

import json
from pathlib import Path

from runners import protocol
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: fixed times keep snapshots stable


_counter = iter(range(1, 10**6))


def _run(ws: Workspace, name: str, experiment: str, state: str, top1s=(), sweep=None, kind="train",
         error=None, start=T0, results=None) -> str:
    rid = f"{next(_counter):010d}"  # fixed ids keep snapshots stable
    d = ws.run_dir(rid)
    d.mkdir(parents=True)
    spec = {"id": rid, "name": name, "experiment": experiment, "kind": kind, "created": start,
            "depends_on": [], "sweep": sweep or {}, "gpus_requested": 1, **(sweep or {})}
    protocol.write_json_atomic(d / protocol.SPEC_FILE, spec)
    ended = start + 600 + 60 * len(top1s) if state in protocol.ENDED_STATES else None
    protocol.write_json_atomic(d / protocol.STATUS_FILE, {"state": state, "gpus": [0] if state != "queued" else None,
                                                         "started": start if state != "queued" else None,
                                                         "ended": ended, "error": error})
    lines = []
    if top1s:
        lines.append({"t": start, "type": "start"})
        for i, top1 in enumerate(top1s):
            for k in range(5):
                lines.append({"t": start + i * 60 + k, "type": "train_step", "step": i * 5 + k, "epoch": i,
                              "loss": 2.0 - 0.1 * i - 0.01 * k, "lr": 0.1 / (1 + i), "images_per_s": 900 + k})
            lines.append({"t": start + i * 60 + 30, "type": "progress", "done": (i + 1) * 5,
                          "total": 5 * len(top1s), "unit": "step", "rate": 0.1, "eta": 0})
            lines.append({"t": start + i * 60 + 31, "type": "epoch", "epoch": i, "top1": top1,
                          "top5": min(100.0, top1 + 20), "train_loss": 2.0 - 0.1 * i, "val_loss": 1.5})
        if state == "finished":
            last = list(top1s[-5:])
            mean = sum(last) / len(last)
            std = (sum((x - mean) ** 2 for x in last) / max(1, len(last) - 1)) ** 0.5
            summary = {"top1_mean": mean, "top1_std": std, "top5_mean": min(100.0, mean + 20), "top5_std": std,
                       "train_loss_mean": 1.5, "train_loss_std": 0.01, "epochs": len(top1s), **(results or {})}
            lines.append({"t": ended, "type": "done", "summary": summary})
            protocol.write_json_atomic(d / protocol.RESULTS_FILE, summary)
    if state == "failed":
        lines.append({"t": ended, "type": "failed", "error": error})
    (d / protocol.EVENTS_FILE).write_text("".join(json.dumps(e) + "\n" for e in lines))
    return rid


def build_workspace(root: Path) -> Workspace:
    global _counter
    _counter = iter(range(1, 10**6))
    ws = Workspace(root).ensure()
    for n in (4, 8, 12, 16, 17):
        curve = [30 + n + e for e in range(6)]
        _run(ws, f"freeze@freeze_layers={n}", "layer-freeze", "finished", curve, {"freeze_layers": n})
    _run(ws, "real-only", "layer-freeze", "finished", [80, 84, 86, 87, 87.5, 87.8])
    _run(ws, "synth-only", "layer-freeze", "finished", [50, 58, 62, 64, 64.5, 64.8])
    for f in (1.0, 0.5, 0.25, 0.125):
        _run(ws, f"reduced@fraction={f}", "data reduction", "finished",
             [70 + 3 * f * e for e in range(6)], {"fraction": f})
    _run(ws, "gen-sd14", "data reduction", "failed", kind="generate", error="model folder /models/sd14 not found")
    _run(ws, "pretrain-synth", "data reduction", "queued")
    RunStore(ws).rebuild()
    return ws


def build_adaptation_workspace(root: Path) -> Workspace:
    """The Unmet Promise, Fig. 2: CLIP adapted on retrieved or synthetic images at two
    sizes and three seeds, and the off-the-shelf model."""
    ws = Workspace(root).ensure()
    for arm, acc in (("retrieved", 60), ("synthetic", 50)):
        for fraction, images in ((0.5, 100), (1.0, 200)):
            for seed in (0, 1, 2):
                _run(ws, f"adapt-{arm}[fraction={fraction},seed={seed}]", "unmet", "finished",
                     [acc + 10 * fraction + seed], {"fraction": fraction, "seed": seed},
                     results={"train_images": images, "linear_probe_top1": acc + 20 + 2 * seed})
    _run(ws, "off-the-shelf", "unmet", "finished", [40], results={"train_images": 0, "linear_probe_top1": 70})
    RunStore(ws).rebuild()
    return ws
