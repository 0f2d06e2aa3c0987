"""What Slurm's accounting says about a run's job: elapsed time, CPU and memory
efficiency (as ``seff`` computes them) and GPU utilisation, from one ``sacct``.

CPU efficiency is TotalCPU / (Elapsed x AllocCPUS); memory efficiency the
largest MaxRSS of the job's steps / ReqMem; GPU utilisation the steps'
``gres/gpuutil`` in TRESUsageInAve, where the cluster gathers it (Slurm's
gpu accounting plugin). Without accounting (no slurmdbd) sacct fails, and the
sentence it failed with is what show and the run screen print.
"""

from __future__ import annotations

import re
import subprocess

FIELDS = ("JobID", "State", "Elapsed", "TotalCPU", "AllocCPUS", "MaxRSS", "ReqMem", "TRESUsageInAve")
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def usage(job_id: str, run=subprocess.run) -> dict | str:
    """The job's figures, or why there are none (one sentence)."""
    try:
        res = run(["sacct", "--noheader", "--parsable2", f"--format={','.join(FIELDS)}", f"--jobs={job_id}"],
                  capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"Slurm accounting could not be asked ({e})"
    if res.returncode != 0:
        why = (res.stderr or res.stdout).strip().splitlines()
        return f"Slurm accounting is not available here ({why[-1] if why else f'sacct exit code {res.returncode}'})"
    figures = parse(res.stdout, job_id)
    return figures if figures else f"Slurm accounting has no record of job {job_id} yet"


def parse(text: str, job_id: str) -> dict:
    """sacct --parsable2 lines (the job, then its steps) -> elapsed_s, cpu_efficiency,
    memory_efficiency, gpu_utilisation (fractions; None where not reported)."""
    rows = [dict(zip(FIELDS, line.split("|"))) for line in text.splitlines() if line.strip()]
    job = next((r for r in rows if r["JobID"] == job_id), None)
    if job is None:
        return {}
    steps = [r for r in rows if r["JobID"].startswith(job_id + ".")]
    elapsed = seconds(job["Elapsed"])
    cpus = int(job["AllocCPUS"] or 0)
    cpu_time = seconds(job["TotalCPU"])
    rss = max((size(r["MaxRSS"]) or 0 for r in steps), default=0)
    requested = size(job["ReqMem"].rstrip("nc"))  # old Slurm: per node (n) or per CPU (c)
    if requested and job["ReqMem"].endswith("c"):
        requested *= max(cpus, 1)
    gpu = [float(m.group(1)) for r in steps for m in [re.search(r"gres/gpuutil=([\d.]+)", r["TRESUsageInAve"])] if m]
    return {"job": job_id, "state": job["State"].split()[0], "elapsed_s": elapsed,
            "cpu_efficiency": cpu_time / (elapsed * cpus) if elapsed and cpus else None,
            "memory_efficiency": rss / requested if requested and rss else None,
            "gpu_utilisation": max(gpu) / 100 if gpu else None}


def seconds(text: str) -> float:
    """Slurm durations: [D-][HH:]MM:SS[.mmm]."""
    if not text or text in ("INVALID", "UNLIMITED"):
        return 0.0
    days, _, clock = text.rpartition("-")
    parts = [float(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    h, m, s = parts
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def size(text: str) -> float | None:
    """Slurm sizes: 512K, 1.50G, 4000M, bare numbers in bytes."""
    if not text:
        return None
    unit = text[-1].upper()
    if unit in _UNITS:
        return float(text[:-1]) * _UNITS[unit]
    try:
        return float(text)
    except ValueError:
        return None


def describe(figures: dict | str) -> str:
    """One line for show and the run screen."""
    if isinstance(figures, str):
        return figures

    def pct(x):
        return f"{100 * x:.0f}%" if x is not None else "not reported"

    hours, rest = divmod(int(figures["elapsed_s"]), 3600)
    return (f"Slurm job {figures['job']} ({figures['state']}): {hours}:{rest // 60:02d}:{rest % 60:02d} elapsed, "
            f"CPU efficiency {pct(figures['cpu_efficiency'])}, memory efficiency "
            f"{pct(figures['memory_efficiency'])}, GPU utilisation {pct(figures['gpu_utilisation'])}")
