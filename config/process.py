"""Process-wide tuning shared by actor hosts and the web edge."""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Call once start-up is done: move everything imported and built so far out of the
    collector's sight (``gc.freeze``), so later full collections walk only what the work
    creates. Without it a full pass over the SDKs' module graphs stalls the loop for
    milliseconds, right in the latency tail."""
    gc.collect()
    gc.freeze()
