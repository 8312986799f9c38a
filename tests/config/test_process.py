"""config.process: what a settled process does with its heap."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.process import YOUNG_THRESHOLD, give_way


def test_a_settled_process_has_frozen_its_start_up_and_collects_the_young_less_often() -> None:
    code = (
        "import gc\n"
        "from config.process import settle_heap\n"
        "before = gc.get_threshold()\n"
        "settle_heap()\n"
        "print(before, gc.get_threshold(), gc.get_freeze_count() > 1000)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split(") (") == ["(700, 10, 10", f"{str(YOUNG_THRESHOLD)[1:-1]}) True\n"]


def test_giving_way_yields_the_cpu_once_and_is_a_no_op_without_sched_yield(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []
    monkeypatch.setattr(os, "sched_yield", lambda: calls.append(None), raising=False)
    give_way()
    assert calls == [None]
    monkeypatch.delattr(os, "sched_yield")
    give_way()  # a platform without it: nothing to do, nothing raised
    assert calls == [None]
