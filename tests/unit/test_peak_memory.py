"""dla_web.memory: the peak resident memory of a stretch of work (Linux /proc), as inference runs record it."""

import numpy as np

from dla_web.memory import peak_rss_gb, reset_peak_rss


def test_the_peak_covers_an_allocation_and_a_reset_forgets_it():
    assert reset_peak_rss(), "this Linux machine resets the high-water mark"
    before = peak_rss_gb()
    block = np.ones(400 * 1024**2 // 8)  # 400 MiB, touched
    during = peak_rss_gb()
    del block
    assert during - before >= 0.35, (before, during)
    assert peak_rss_gb() > during - 0.05, "freeing memory does not lower the peak"
    assert reset_peak_rss()
    assert peak_rss_gb() < during - 0.3, "after a reset the freed block no longer counts"
