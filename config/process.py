"""Process-wide tuning shared by actor hosts and the web edge."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = (50_000, 20, 10)
"""The collector's thresholds once a process has settled (Python's are 700, 10, 10)."""


def settle_heap() -> None:
    """Call once start-up is done: move everything imported and built so far out of the
    collector's sight (``gc.freeze``), so later full collections walk only what the work
    creates. Without it a full pass over the SDKs' module graphs stalls the loop for
    milliseconds, right in the latency tail.

    Then collect the young generation less often. Nearly everything a turn allocates is
    freed by reference counting within milliseconds; at Python's 700 allocations a
    collection came every few turns and promoted whatever was in flight, so the older
    generation filled and was walked (~1 ms a pass) over and over. Measured in the core
    process over one bench/chat.py run (100 sessions, start-up included): 738 young and 66 older
    collections, 270 ms in all, against 266 and 24, 46 ms, with ``YOUNG_THRESHOLD``."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*YOUNG_THRESHOLD)
