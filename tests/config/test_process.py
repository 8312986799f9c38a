"""config.process: what a settled process does with its heap."""

from __future__ import annotations

import subprocess
import sys

from config.process import YOUNG_THRESHOLD


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
