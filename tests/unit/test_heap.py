"""nurture.heap: a service process freezes its start-up objects and collects its youngest generation less often, once.

Run in a fresh interpreter: the collector's settings belong to the process."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
from nurture.heap import YOUNG_COLLECTION, settle_after_start_up
before = (gc.get_threshold(), gc.get_freeze_count())
kept = [[i] for i in range(1000)]  # alive at start-up: frozen
settle_after_start_up()
settled = (gc.get_threshold(), gc.get_freeze_count())
gc.set_threshold(800, *gc.get_threshold()[1:])
settle_after_start_up()  # once per process: a second call changes nothing
print(json.dumps({"before": before, "settled": settled, "again": gc.get_threshold(), "young": YOUNG_COLLECTION}))
"""


def test_settling_freezes_the_start_up_heap_and_collects_the_youngest_generation_less_often_once():
    out = json.loads(subprocess.run([sys.executable, "-c", SCRIPT], check=True, capture_output=True, text=True).stdout)
    (young_before, *older_before), frozen_before = out["before"]
    (young, *older), frozen = out["settled"]
    assert young_before < out["young"] and frozen_before == 0  # Python's defaults: the change below is the function's
    assert young == out["young"] == 10_000 and older == older_before
    assert frozen > 1000
    assert out["again"][0] == 800
