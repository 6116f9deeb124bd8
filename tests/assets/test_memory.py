"""A step's reported peak memory (lineage metrics, UI metadata)."""


def test_peak_memory_sees_an_allocation_that_is_freed_before_the_step_ends():
    import time

    import numpy as np

    from infdist_assets.store.memory import PeakMemory

    mem = PeakMemory(interval=0.01)
    base = mem.peak
    block = np.ones(200 * 2**20 // 8)  # 200 MB, touched
    time.sleep(0.1)
    del block
    peak = mem.stop()["peak_rss_mb"]
    assert peak * 2**20 > base + 150 * 2**20, (base / 2**20, peak)
