"""The launcher seam: how a run's process is started, checked, signalled and
stopped. The supervisor's queue, dependencies and index never depend on which
launcher runs the process.

A launcher returns an opaque, JSON-serialisable handle from ``launch``; it is
kept in the run's ``status.json`` (with the launcher's name), so any process
(the CLI's cancel, the app's GPU panel, a restarted supervisor) can act on
the run later through the same launcher.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from synthgap_tui.errors import UserError

# name -> "module:Class"; imported only when used.
LAUNCHERS = {"local": "synthgap_tui.launchers.local:LocalLauncher",
             "slurm": "synthgap_tui.launchers.slurm:SlurmLauncher"}
DEFAULT = "local"


class LaunchError(UserError):
    """The run could not be started now (a scheduler unreachable, sbatch refused);
    it stays queued and the message says why."""


@dataclass(frozen=True)
class Launch:
    """What to start: the runner's command (``python -m MODULE ...``) for one run."""

    run_id: str
    command: list[str]
    nproc: int  # processes (one per GPU) the runner is started with
    env: dict[str, str]
    run_dir: Path
    devices: list[int]
    options: dict = field(default_factory=dict)  # the launcher's settings: config.toml's, then the run's
    nodes: int = 1
    gpus: int = 0  # GPUs the run asks for (per node): a scheduler's request when its options do not say
    group: str | None = None  # runs of one group (a sweep's members) may be started together


@dataclass(frozen=True)
class Poll:
    """What a launcher knows of a run's process: running, its exit code once
    known, and where it is (``info``: job id, node, scheduler state, a problem),
    kept in status.json and shown by the runs table, the run screen and show."""

    running: bool
    exit_code: int | None = None
    info: dict = field(default_factory=dict)


class Launcher(ABC):
    name: str
    schedules = False  # True: a scheduler places runs; the supervisor hands it every ready run
    max_nodes: int | None = 1  # nodes one run may span (None: any)

    @abstractmethod
    def launch(self, launch: Launch) -> dict:
        """Start the run; returns its handle."""

    def launch_many(self, launches: list[Launch]) -> dict[str, dict | LaunchError]:
        """Start several runs; each run's handle, or the LaunchError that kept it queued.
        A scheduler may start a group's runs as one submission (a Slurm job array)."""
        out: dict[str, dict | LaunchError] = {}
        for launch in launches:
            try:
                out[launch.run_id] = self.launch(launch)
            except LaunchError as e:
                out[launch.run_id] = e
        return out

    @abstractmethod
    def alive(self, handles: dict[str, dict]) -> dict[str, Poll]:
        """For each run id, a Poll. One call for all active runs: a launcher
        that asks a scheduler asks it once."""

    @abstractmethod
    def signal(self, handle: dict, sig: int) -> bool:
        """Send ``sig`` to the run's processes; False if they are gone."""

    @abstractmethod
    def kill(self, handle: dict) -> bool:
        """Stop the run now (after the cancel grace period)."""

    def pids(self, handle: dict) -> list[int]:
        """Process ids of the run on this machine (the GPU panel maps NVML's
        processes to runs with them); none for runs elsewhere."""
        return []

    def describe(self, handle: dict) -> str:
        """Where the run is, for people: 'pid 123 on box', 'job 42 on node3'."""
        return ""

    def usage(self, handle: dict) -> str | None:
        """What the scheduler's accounting says of the run's job (elapsed, CPU and memory
        efficiency, GPU utilisation), or why it cannot say; None without a scheduler."""
        return None

    def job_output(self, handle: dict, run_dir: Path) -> Path | None:
        """The file where the scheduler's job wrote what it printed around the runner
        (``logs --job``, the run screen's Log tab); None without a scheduler or before
        the job started."""
        return None


_instances: dict[str, Launcher] = {}


def get(name: str | None = None) -> Launcher:
    name = name or DEFAULT
    if name not in _instances:
        if name not in LAUNCHERS:
            raise UserError(f"unknown launcher {name!r}; known: {', '.join(LAUNCHERS)}")
        module, cls = LAUNCHERS[name].split(":")
        _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]


def of_status(status: dict) -> tuple[Launcher, dict]:
    """The launcher and handle a run's status.json names."""
    return get(status.get("launcher")), status.get("handle") or {}
