"""The machine description written into every benchmark result."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def describe() -> dict:
    """CPU, core count, torch/CUDA, and other t2igan train/eval jobs running (they skew timings)."""
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        busy = subprocess.run(["ps", "-eo", "pid,pcpu,args"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        busy = []
    others = [ln.strip()[:160] for ln in busy if "t2igan" in ln and ("train" in ln or "eval" in ln) and "serve" not in ln]
    return {"platform": platform.platform(), "cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "other_t2igan_jobs_running": others,
            "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def matmul_gflops(threads: int | None = None, n: int = 1024, dtype=None, device: str = "cpu", seconds: float = 1.0) -> float:
    """Measured square-matmul throughput (GFLOP/s): the machine's practical ceiling for the
    dense work of a model (convolutions run as matmuls), in the caller's thread setting."""
    import time

    import torch

    if threads:
        torch.set_num_threads(threads)
    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, reps, t_end = 0.0, 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end or reps < 3:
        t = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
        reps += 1
    return best
