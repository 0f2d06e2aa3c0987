"""A fake pynvml module: the same calls, with 0..N made-up GPUs or a failing driver."""

from types import SimpleNamespace


class FakeNvml:
    def __init__(self, count: int = 1, fail_init: bool = False, fail_count: bool = False, procs=None):
        self.count, self.fail_init, self.fail_count = count, fail_init, fail_count
        self.procs = procs or {}

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        if self.fail_count:
            raise RuntimeError("GPU is lost")
        return self.count

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "NVIDIA A100-SXM4-80GB"

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=(h + 1) * 5 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=10 * h % 100, memory=5)

    def nvmlDeviceGetPowerUsage(self, h):
        if h == 1:
            raise RuntimeError("Not Supported")
        return 250_000

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 40 + h

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in self.procs.get(h, [])]
