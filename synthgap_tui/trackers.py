"""Runs exported to the tools researchers already use: TensorBoard event files
(``tensorboard --logdir``) and an MLflow file store (``mlruns/``).

A run's curves are the numeric fields of the events its kind charts
(train_step, epoch, progress), against the chart's x (step, epoch, done), as
``event/field``; results, parameters, tags and the note go where each tool
keeps them. tensorboard and mlflow-skinny are the ``trackers`` extra: they
are imported here only, when an export asks for them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from runners import kinds, protocol
from synthgap_tui.errors import UserError
from synthgap_tui.workspace import Workspace

FORMATS = ("tensorboard", "mlflow")
AXES = {"t", "epoch", "step", "stage", "done", "total"}  # event fields that place a point, not curves
MLFLOW_PARAM_LIMIT = 6000  # characters MLflow keeps of a parameter value
_MLFLOW_STATUS = {protocol.FINISHED: "FINISHED", protocol.FAILED_STATE: "FAILED",
                  protocol.CANCELLED_STATE: "KILLED", protocol.LOST: "FAILED"}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def curves(ws: Workspace, record: dict) -> dict[str, list[tuple[int, float, float]]]:
    """``{"epoch/top1": [(step, value, wall time), …], …}`` of one run."""
    kind = kinds.all_kinds().get(record.get("kind"))
    x_of = {chart.event: chart.x for chart in (kind.charts if kind else ())}
    x_of.setdefault(protocol.EPOCH, "epoch")
    out: dict[str, list[tuple[int, float, float]]] = {}
    for event in protocol.read_events(ws.events_path(record["id"])):
        x = x_of.get(event["type"])
        step = _number(event.get(x)) if x else None
        if step is None:
            continue
        for key, value in event.items():
            value = _number(value)
            if value is not None and key not in AXES:
                out.setdefault(f"{event['type']}/{key}", []).append((int(step), value, event.get("t", 0.0)))
    return out


def _import(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise UserError(f"exporting to {module.split('.')[0]} needs it installed: "
                        "pip install 'synthgap[trackers]'") from None


def _run_label(record: dict) -> str:
    name = re.sub(r"[^\w.=,@-]+", "_", record.get("name", record["id"])).strip("_")
    return f"{name}-{record['id']}"


def to_tensorboard(ws: Workspace, records: list[dict], out: Path) -> list[Path]:
    """One log folder per run (``<name>-<id>``) under ``out``, written afresh each time
    (its earlier event files replaced, so exporting again repeats no step); every
    point keeps the wall time its event had."""
    Writer = _import("tensorboard.summary").Writer
    written = []
    for record in records:
        logdir = out / _run_label(record)
        old = list(logdir.glob("events.out.tfevents.*")) if logdir.is_dir() else []
        writer = Writer(str(logdir))
        try:
            for tag, points in curves(ws, record).items():
                for step, value, t in points:
                    writer.add_scalar(tag, value, step=step, wall_time=t or None)
            end = record.get("ended") or record.get("started")
            for key, value in (record.get("summary") or {}).items():
                if _number(value) is not None:
                    writer.add_scalar(f"results/{key}", _number(value), step=0, wall_time=end)
        finally:
            writer.close()
        _tensorboard_hparams(ws, record, logdir)
        for path in old:  # the new files are whole: the old ones go
            path.unlink(missing_ok=True)
        written.append(logdir)
    return written


def hyperparameters(ws: Workspace, record: dict) -> dict:
    """A run's scalar parameters (its spec over its kind's defaults), as trackers compare them."""
    spec = protocol.read_json(ws.run_file(record["id"], protocol.SPEC_FILE), {}) or {}
    kind = kinds.all_kinds().get(spec.get("kind"))
    used = kind.resolve(spec) if kind else spec
    return {k: v for k, v in used.items() if isinstance(v, (str, int, float, bool)) and k not in ("id", "created")}


def _tensorboard_hparams(ws: Workspace, record: dict, logdir: Path) -> None:
    """The run's parameters for TensorBoard's HParams dashboard (its session-start
    summary, built from the plugin's protos: the plugin's own writer needs TensorFlow)."""
    plugin = _import("tensorboard.plugins.hparams.plugin_data_pb2")
    metadata = _import("tensorboard.plugins.hparams.metadata")
    summary_pb2 = _import("tensorboard.compat.proto.summary_pb2")
    event_pb2 = _import("tensorboard.compat.proto.event_pb2")
    EventFileWriter = _import("tensorboard.summary.writer.event_file_writer").EventFileWriter
    start = plugin.SessionStartInfo(group_name=record.get("experiment") or "",
                                    start_time_secs=record.get("started") or 0)
    for key, value in hyperparameters(ws, record).items():
        if isinstance(value, bool):
            start.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            start.hparams[key].number_value = float(value)
        else:
            start.hparams[key].string_value = value
    data = plugin.HParamsPluginData(session_start_info=start, version=metadata.PLUGIN_DATA_VERSION)
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.SESSION_START_INFO_TAG, metadata=metadata.create_summary_metadata(data))])
    writer = EventFileWriter(str(logdir), filename_suffix=".hparams")
    try:
        writer.add_event(event_pb2.Event(wall_time=record.get("started") or 0.0, step=0, summary=summary))
    finally:
        writer.close()


def to_mlflow(ws: Workspace, records: list[dict], out: Path) -> Path:
    """An MLflow file store at ``out``: one MLflow experiment per SynthGap
    experiment, one MLflow run per run (params, metric histories, results as
    metrics, tags, the note as the run's description)."""
    # MLflow 3 keeps the file store in maintenance mode behind this switch;
    # a folder of files is what fits a run directory and needs no server.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    tracking = _import("mlflow.tracking")
    entities = _import("mlflow.entities")
    client = tracking.MlflowClient(tracking_uri=out.resolve().as_uri())
    experiments: dict[str, str] = {}
    for record in records:
        name = record.get("experiment") or "synthgap"
        if name not in experiments:
            found = client.get_experiment_by_name(name)
            experiments[name] = found.experiment_id if found else client.create_experiment(name)
        tags = {"synthgap.id": record["id"], "synthgap.kind": record.get("kind", ""),
                "synthgap.state": record["state"], **{f"tag.{t}": "true" for t in record.get("tags") or []}}
        if record.get("note"):
            tags["mlflow.note.content"] = record["note"]
        start = record.get("started") or record.get("created") or 0
        # Exported before (found by its synthgap.id tag): the same MLflow run gets only what is new.
        found = client.search_runs([experiments[name]], filter_string=f"tags.`synthgap.id` = '{record['id']}'")
        if found:
            run_id = found[0].info.run_id
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
        else:
            run_id = client.create_run(experiments[name], start_time=int(start * 1000), tags=tags,
                                       run_name=record.get("name", record["id"])).info.run_id
        logged = {(m.key, m.step, m.timestamp) for key in (found[0].data.metrics if found else {})
                  for m in client.get_metric_history(run_id, key)}
        have_params = found[0].data.params if found else {}
        params = {**hyperparameters(ws, record), **(record.get("params") or {})}
        metrics = [entities.Metric(tag.replace("/", "."), value, int(t * 1000), step)
                   for tag, points in curves(ws, record).items() for step, value, t in points]
        metrics += [entities.Metric(f"results.{k}", _number(v), int((record.get("ended") or start) * 1000), 0)
                    for k, v in (record.get("summary") or {}).items() if _number(v) is not None]
        metrics = [m for m in metrics if (m.key, m.step, m.timestamp) not in logged]
        param_list = [entities.Param(k, str(v)[:MLFLOW_PARAM_LIMIT]) for k, v in sorted(params.items())
                      if k not in have_params]
        # log_batch takes at most 1000 metrics and 100 params per call.
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        for i in range(0, len(param_list), 100):
            client.log_batch(run_id, params=param_list[i:i + 100])
        if record["state"] in _MLFLOW_STATUS:
            end = record.get("ended")
            client.set_terminated(run_id, _MLFLOW_STATUS[record["state"]],
                                  end_time=int(end * 1000) if end else None)
    return out


def export(ws: Workspace, records: list[dict], out: Path, fmt: str) -> list[Path]:
    """Write ``records`` in ``fmt`` under ``out``; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "tensorboard":
        return to_tensorboard(ws, records, out)
    return [to_mlflow(ws, records, out)]


def how_to_open(fmt: str, out: Path) -> str:
    if fmt == "tensorboard":
        return f"tensorboard --logdir {out}"
    return f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {out.resolve().as_uri()}"
