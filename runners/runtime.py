"""What every runner shares: its run directory, events, SIGTERM, atomic saves, devices."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from runners import kinds, protocol, provenance


log = logging.getLogger("synthgap.runner")


class RunnerError(Exception):
    """A problem with the spec or the inputs: reported as a failed event without a traceback."""


class RunContext:
    """The run directory of one attempt. Only the main process (rank 0) writes events."""

    def __init__(self, run_dir: str | os.PathLike, main_process: bool = True):
        self.run_dir = Path(run_dir)
        spec_path = self.run_dir / protocol.SPEC_FILE
        try:
            self.spec: dict = json.loads(spec_path.read_text())
        except FileNotFoundError:
            raise SystemExit(f"{spec_path} does not exist: is {self.run_dir} a run directory?")
        except ValueError as e:
            raise SystemExit(f"{spec_path} is not valid JSON: {e}")
        self.main = main_process
        self.events = protocol.EventWriter(self.run_dir / protocol.EVENTS_FILE) if main_process else None
        self.checkpoints = self.run_dir / protocol.CHECKPOINT_DIR
        self.checkpoints.mkdir(exist_ok=True)
        self.stop_requested = False
        self.progress = ProgressLog(self.spec, self.run_dir)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        # Slurm's warning before a time limit or a preemption (submitit asks for USR2):
        # the same orderly stop; the job is requeued and the run resumes.
        signal.signal(signal.SIGUSR2, self._on_sigterm)

    def _on_sigterm(self, *_):
        # Finish the current step, save, and stop: handled by the loop.
        self.stop_requested = True

    def emit(self, type: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.emit(type, **fields)
            line = self.progress.line(type, fields)
            if line:
                log.info(line)

    def log(self, message: str, level: str = "info") -> None:
        self.emit(protocol.LOG, level=level, message=message)
        if self.main:
            log.log(getattr(logging, level.upper(), logging.INFO), message)

    def run(self, body) -> int:
        """Run ``body(self)``; turn its outcome into a final event and an exit code."""
        try:
            if self.main:
                # A killed earlier attempt may have left half-written files in the runner's own folders
                # (not the run directory itself: the supervisor writes status.json there).
                for folder in (self.checkpoints, self.run_dir / protocol.DATA_DIR):
                    protocol.remove_temp_files(folder)
                kind = kinds.all_kinds().get(self.spec.get("kind"))
                provenance.write(self.run_dir, self.spec, kind.resolve(self.spec) if kind else self.spec)
            summary = body(self)
            if self.main:
                protocol.write_json_atomic(self.run_dir / protocol.RESULTS_FILE, summary)
            self.emit(protocol.DONE, summary=summary)
        except Cancelled as c:
            self.emit(protocol.CANCELLED, reason=str(c) or "SIGTERM")
            return 143
        except (RunnerError, FileNotFoundError, ValueError) as e:
            self.emit(protocol.FAILED, error=str(e), traceback=traceback.format_exc())
            log.error(str(e))
            return 1
        except OSError as e:
            if not protocol.is_no_space(e):
                return self._failed(f"{type(e).__name__}: {e}", traceback.format_exc())
            # What was written is whole (every write is atomic) and the last checkpoint stays.
            message = f"{protocol.os_error_message(e)}: free space, then `synthgap resume` continues from the last " \
                      "checkpoint"
            try:
                self.emit(protocol.FAILED, error=message, traceback=traceback.format_exc())
            except OSError:
                pass  # no room for the event either: the exit code tells the supervisor
            log.error(message)
            return protocol.NO_SPACE_EXIT
        except Exception as e:
            return self._failed(f"{type(e).__name__}: {e}", traceback.format_exc())
        return 0

    def _failed(self, error: str, tb: str) -> int:
        self.emit(protocol.FAILED, error=error, traceback=tb)
        log.error(tb)
        return 1


class ProgressLog:
    """The human side of the events: what stdout.log (``synthgap logs -f``) says as a run
    goes. A line when it starts, one per epoch, progress at most every ``every`` seconds
    (and at the end of a phase), and the outcome; every runner gets them from its events."""

    SUMMARY_KEYS = ("top1_mean", "linear_probe_top1", "images", "kept", "images_per_s", "eval_skipped")

    def __init__(self, spec: dict, run_dir: Path, every: float = 30.0):
        self.spec, self.run_dir, self.every = spec, run_dir, every
        self.last, self.eta = 0.0, None

    def line(self, type: str, f: dict) -> str | None:
        if type == protocol.START:
            what = ", ".join(f"{k} {f[k]}" for k in ("device", "images", "classes", "train_images", "eval_images",
                                                     "pool_images", "token") if f.get(k) is not None)
            return (f"{self.spec.get('kind', 'run')} {self.spec.get('name', '')} ({self.run_dir.name}) "
                    f"{'resumed' if f.get('resumed') else 'started'}" + (f": {what}" if what else ""))
        if type == protocol.PROGRESS:
            self.eta = f.get("eta")
            done, total, now = f.get("done") or 0, f.get("total") or 0, time.monotonic()
            if now - self.last < self.every and done != total:
                return None
            self.last = now
            phase = f"{f['phase']}: " if f.get("phase") else ""
            pct = f" ({100 * done / total:.0f}%)" if total else ""
            rate = f", {f['rate']:g} {f.get('unit', 'item')}/s" if f.get("rate") else ""
            return f"{phase}{done}/{total or '?'} {f.get('unit', 'item')}s{pct}{rate}{_eta(self.eta)}"
        if type == protocol.EPOCH:
            parts = [f"{label} {f[k]:{fmt}}" for k, label, fmt in (
                ("train_loss", "train loss", ".4f"), ("top1", "top-1", ".2f"), ("top5", "top-5", ".2f"),
                ("holdout_top1", "holdout top-1", ".2f"), ("images_per_s", "img/s", ".0f"))
                if isinstance(f.get(k), (int, float))]
            return f"epoch {f.get('epoch')}: " + ", ".join(parts) + _eta(self.eta)
        if type == protocol.DONE:
            summary = f.get("summary") or {}
            parts = [f"{k} {summary[k]:.4g}" if isinstance(summary[k], float) else f"{k} {summary[k]}"
                     for k in self.SUMMARY_KEYS if summary.get(k) is not None]
            return "finished" + (f": {', '.join(parts)}" if parts else "")
        return None


def _eta(seconds: float | None) -> str:
    if not seconds:
        return ""
    h, rest = divmod(int(seconds), 3600)
    return f", ETA {h}:{rest // 60:02d}:{rest % 60:02d}"


class Cancelled(Exception):
    pass


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Serialised in memory first: torch's zip writer reports a full disk as an opaque
    RuntimeError ("unexpected pos"), a plain write as the OSError it is."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    protocol.write_atomic(path, lambda f: f.write(buffer.getbuffer()))


def runner_args_parser(description: str) -> argparse.ArgumentParser:
    """The command line every runner shares (torchvision references style)."""
    parser = argparse.ArgumentParser(description=description)
    group = parser.add_argument_group("run")
    group.add_argument("--run-dir", required=True, help="run directory with spec.json")
    group.add_argument("--resume", action="store_true", help="continue from the run's checkpoint or files")
    perf = parser.add_argument_group("performance")
    perf.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser


def run_main(args, body: Callable[[RunContext, argparse.Namespace], dict]) -> int:
    """``main(args)`` of a runner: logging, threads, the process group under torchrun
    (rank 0 writes events and files), run directory, final event, exit code."""
    # stdout is the run's stdout.log (the supervisor points it there).
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        ctx = RunContext(args.run_dir, main_process=int(os.environ.get("RANK", "0")) == 0)
        return ctx.run(lambda c: body(c, args))
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


class Device:
    """The CUDA / CPU choices in one place: autocast, memory format, transfers."""

    def __init__(self, amp: bool = True, channels_last: bool = True, local_rank: int = 0,
                 deterministic: bool = False):
        self.cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local_rank}" if self.cuda else "cpu")
        if deterministic:
            # Bit-reproducible runs: no autotuned kernels, no TF32, deterministic algorithms
            # (cuBLAS needs a fixed workspace for that), at some cost in speed.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        if self.cuda:
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = not deterministic
            torch.backends.cudnn.deterministic = deterministic
            torch.backends.cuda.matmul.allow_tf32 = not deterministic
            torch.backends.cudnn.allow_tf32 = not deterministic
        self.amp = amp and self.cuda
        self.dtype = torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.memory_format = torch.channels_last if (self.cuda and channels_last) else torch.contiguous_format
        # bf16 needs no loss scaling; fp16 (pre-Ampere GPUs) does.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.dtype == torch.float16)

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def to(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return x.to(self.device, non_blocking=True)

    def memory(self) -> list[dict] | None:
        """Per-device memory of this process, for ``gpu`` events (None on the CPU)."""
        if not self.cuda:
            return None
        return [{"index": self.device.index, "memory_allocated": torch.cuda.memory_allocated(),
                 "max_memory_allocated": torch.cuda.max_memory_allocated(),
                 "memory_reserved": torch.cuda.memory_reserved()}]
