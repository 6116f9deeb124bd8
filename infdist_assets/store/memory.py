"""What a step's peak memory was, for its metadata and lineage (costs visible to users)."""

from __future__ import annotations

import os
import threading


class PeakMemory:
    """The step's peak resident memory, sampled every ``interval`` s by a daemon thread from
    ``/proc/self/statm`` (the process's lifetime high-water mark would include earlier steps of
    an in-process run); and the peak CUDA memory allocated, when a GPU is in use."""

    def __init__(self, interval: float = 0.05) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()
        try:
            import torch

            self._cuda = torch.cuda.is_available()
            if self._cuda:
                torch.cuda.reset_peak_memory_stats()
        except ImportError:
            self._cuda = False

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self.peak = max(self.peak, self._rss())
        out = {"peak_rss_mb": round(self.peak / 2**20, 1)}
        if self._cuda:
            import torch

            out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out
