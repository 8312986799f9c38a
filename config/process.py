"""Process-wide tuning shared by actor hosts and the web edge."""

from __future__ import annotations

import gc
import os
import time

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


AUTOGROUP = "/proc/self/autogroup"


def lower_priority(niceness: int) -> bool:
    """Make this process yield the CPU to everything else on the machine: ``niceness``
    for it and, when it leads a session of its own, for that session's scheduling group.

    Linux (``CONFIG_SCHED_AUTOGROUP``, on by default in most kernels and on this machine)
    shares the CPU first between sessions, each one group, and applies niceness only
    within a group. The supervisor starts every part in a session of its own, so
    ``os.nice`` alone did nothing against the other parts: the embedded model at niceness
    19 still took ~0.9 of the 2 cores while 8 sessions' speech waited (bench/voice.py,
    2026-11-23). A group's own niceness is ``/proc/self/autogroup``; it is set only when
    the group is this process's alone (started with a new session), so a model started
    from a shell does not slow the shell's other programs. True when the kernel now shows the
    group at ``niceness``."""
    os.nice(niceness)
    if os.getsid(0) != os.getpid():
        return False
    for _ in range(3):
        try:
            with open(AUTOGROUP, "w") as f:
                f.write(str(niceness))
            break
        except BlockingIOError:  # the kernel takes one such change in 0.1 s from a process without CAP_SYS_ADMIN
            time.sleep(0.1)
        except OSError:  # no autogroups (another kernel, or switched off): niceness is enough there
            return False
    return group_niceness(AUTOGROUP) == niceness


def group_niceness(path: str = AUTOGROUP) -> int | None:
    """This process's scheduling group's niceness (``/autogroup-7423 nice 0``), or None where
    the kernel shows no group: no autogroups, or a task in the kernel's default group, as in
    a container whose processes never started a session (its file reads empty)."""
    try:
        with open(path) as f:
            fields = f.read().split()
        return int(fields[-1]) if fields else None
    except (OSError, ValueError):
        return None


def give_way() -> None:
    """Let the threads and processes this one just woke have the CPU before it goes on.

    Linux tends to wake a thread on the core of the thread that woke it (its caches are
    warm there), where it then waits for the waker's time slice to end. Call this after
    sending something urgent while plenty of less urgent work follows: the character
    agent, once a reply's first words are on the bus, still reads and publishes the rest
    of the model's answer, and the broker's and edge's threads that carry the words to the
    browser waited behind it. In bench/chat.py (100 sessions, 2026-11-23) the hop from the
    first delta to the browser fell from 1.83-1.88 ms to 0.69-0.84 ms at the median, and
    sequential turns (one at a time) from 6.6-6.8 to 5.6-6.1 ms. A no-op where the
    platform has no ``sched_yield``."""
    yield_now = getattr(os, "sched_yield", None)
    if yield_now is not None:
        yield_now()
