"""Runs as processes of this machine, each in its own session with its output
in files, so closing the app or losing SSH stops none of them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import psutil

from synthgap_tui.launchers import Launch, Launcher, Poll


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self) -> None:
        # Children this process started: their exit codes are known.
        self._children: dict[int, subprocess.Popen] = {}

    def launch(self, launch: Launch) -> dict:
        cmd = list(launch.command)
        if launch.nproc > 1 and cmd[:2] == [sys.executable, "-m"]:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={launch.nproc}", *cmd[1:]]
        with open(launch.run_dir / "stdout.log", "ab") as out:
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=launch.run_dir, env=launch.env, start_new_session=True, close_fds=True)
        self._children[child.pid] = child
        try:
            created = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:  # already gone: alive() settles it
            created = None
        return {"pid": child.pid, "pgid": child.pid, "create_time": created, "host": socket.gethostname(),
                "cmd": cmd}

    def alive(self, handles: dict[str, dict]) -> dict[str, Poll]:
        out = {}
        for run_id, handle in handles.items():
            child = self._children.get(handle.get("pid"))
            if child is not None:
                code = child.poll()
                if code is not None:
                    self._children.pop(child.pid)
                out[run_id] = Poll(code is None, code)
            else:  # started by another supervisor: the exit code is not ours to know
                out[run_id] = Poll(_same_process(handle))
        return out

    def signal(self, handle: dict, sig: int) -> bool:
        if not _same_process(handle):
            return False
        try:
            os.killpg(handle.get("pgid") or handle["pid"], sig)
            return True
        except ProcessLookupError:
            return False

    def kill(self, handle: dict) -> bool:
        return self.signal(handle, signal.SIGKILL)

    def pids(self, handle: dict) -> list[int]:
        return [handle["pid"]] if handle.get("pid") else []

    def describe(self, handle: dict) -> str:
        return f"pid {handle['pid']} on {handle.get('host', '?')}" if handle.get("pid") else ""


def _same_process(handle: dict) -> bool:
    """Is the handle's process still the runner (not a reused pid)?"""
    pid, created = handle.get("pid"), handle.get("create_time")
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(proc.create_time() - created) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
