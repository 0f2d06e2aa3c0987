"""sacct's figures as seff computes them (the parser; the test cluster has no
accounting, so test_slurm.py checks the sentence that says so)."""

from synthgap_tui.launchers import slurm_accounting

# sacct --parsable2 --format=JobID,State,Elapsed,TotalCPU,AllocCPUS,MaxRSS,ReqMem,TRESUsageInAve
# for a 2-hour, 8-CPU, 32 GiB, one-GPU job (the layout Slurm 23.11+ prints, gpuutil from the gpu plugin).
SACCT = """\
4242|COMPLETED|02:00:00|12:00:00|8||32G|
4242.batch|COMPLETED|02:00:00|00:00:05|8|1024K|||cpu=00:00:05,mem=1M
4242.0|COMPLETED|01:59:50|11:59:55|8|8G||cpu=11:59:55,gres/gpumem=20G,gres/gpuutil=71,mem=7G
"""


def test_efficiencies_are_seff_s():
    got = slurm_accounting.parse(SACCT, "4242")
    assert got["elapsed_s"] == 7200 and got["state"] == "COMPLETED"
    assert got["cpu_efficiency"] == 12 * 3600 / (7200 * 8)  # TotalCPU / (Elapsed x CPUs) = 75%
    assert got["memory_efficiency"] == 8 / 32  # the largest step MaxRSS / ReqMem
    assert got["gpu_utilisation"] == 0.71
    line = slurm_accounting.describe(got)
    assert "2:00:00 elapsed" in line and "CPU efficiency 75%" in line and "memory efficiency 25%" in line \
        and "GPU utilisation 71%" in line


def test_an_array_task_old_per_cpu_memory_and_no_gpu_figures():
    text = ("77_3|FAILED|1-00:00:00|2-00:00:00.500|4||2Gc|\n"
            "77_3.batch|FAILED|1-00:00:00|2-00:00:00.500|4|4G||cpu=2-00:00:00\n")
    got = slurm_accounting.parse(text, "77_3")
    assert got["elapsed_s"] == 86400 and abs(got["cpu_efficiency"] - 0.5) < 1e-5
    assert got["memory_efficiency"] == 4 / 8  # 2G per CPU x 4 CPUs
    assert got["gpu_utilisation"] is None and "GPU utilisation not reported" in slurm_accounting.describe(got)
    assert slurm_accounting.parse(text, "78") == {}


def test_without_accounting_the_reason_is_one_sentence():
    import subprocess

    def no_dbd(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "sacct: error: Slurm accounting storage is disabled\n")

    why = slurm_accounting.usage("5", run=no_dbd)
    assert why == "Slurm accounting is not available here (sacct: error: Slurm accounting storage is disabled)"
