"""GPU state from NVML, behind a small interface that never raises into callers.

Every reading is taken through ``NvmlMonitor.snapshot()``; a missing driver,
no GPU or an NVML error becomes ``GpuReport.error`` and fields NVML cannot
give (a "Not Supported" power reading, say) become None. Tests pass a fake
module with the same functions as ``pynvml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int | None


@dataclass(frozen=True)
class GpuSnapshot:
    index: int
    name: str
    memory_used: int | None = None
    memory_total: int | None = None
    utilization: int | None = None  # percent
    temperature: int | None = None  # Celsius
    power_w: float | None = None
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True)
class GpuReport:
    gpus: tuple[GpuSnapshot, ...] = ()
    driver: str | None = None
    error: str | None = None

    @property
    def count(self) -> int:
        return len(self.gpus)


def _load_pynvml():
    import pynvml  # from nvidia-ml-py; loads libnvidia-ml lazily at nvmlInit

    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlMonitor:
    def __init__(self, nvml: Any = None):
        self._nvml = nvml
        self._initialised = False
        self._init_error: str | None = None

    def _ensure(self) -> str | None:
        if self._initialised or self._init_error:
            return self._init_error
        try:
            if self._nvml is None:
                self._nvml = _load_pynvml()
            self._nvml.nvmlInit()
            self._initialised = True
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, …
            self._init_error = f"NVML unavailable: {_text(e) or type(e).__name__} (no NVIDIA driver?)"
        return self._init_error

    def _try(self, fn, *args, default=None):
        try:
            return fn(*args)
        except Exception:
            return default

    def snapshot(self) -> GpuReport:
        error = self._ensure()
        if error:
            return GpuReport(error=error)
        nv = self._nvml
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception as e:
            return GpuReport(error=f"NVML error: {_text(e) or type(e).__name__}")
        driver = self._try(lambda: _text(nv.nvmlSystemGetDriverVersion()))
        gpus = []
        for i in range(count):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
            except Exception as e:
                return GpuReport(driver=driver, error=f"NVML error on GPU {i}: {_text(e)}")
            mem = self._try(nv.nvmlDeviceGetMemoryInfo, h)
            util = self._try(nv.nvmlDeviceGetUtilizationRates, h)
            power = self._try(nv.nvmlDeviceGetPowerUsage, h)
            procs = self._try(nv.nvmlDeviceGetComputeRunningProcesses, h, default=[]) or []
            gpus.append(GpuSnapshot(
                index=i,
                name=self._try(lambda: _text(nv.nvmlDeviceGetName(h)), default=f"GPU {i}"),
                memory_used=getattr(mem, "used", None),
                memory_total=getattr(mem, "total", None),
                utilization=getattr(util, "gpu", None),
                temperature=self._try(nv.nvmlDeviceGetTemperature, h, 0),  # 0 = NVML_TEMPERATURE_GPU
                power_w=power / 1000 if power is not None else None,
                processes=tuple(GpuProcess(p.pid, getattr(p, "usedGpuMemory", None)) for p in procs),
            ))
        return GpuReport(gpus=tuple(gpus), driver=driver)

    def close(self) -> None:
        if self._initialised:
            self._try(self._nvml.nvmlShutdown)
            self._initialised = False
