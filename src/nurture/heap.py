"""The process's cyclic garbage collector, set for a long-running service once its start-up is done.

A service process (``nurture serve``, ``nurture run`` and its dispatch processes) keeps what it built at start-up (the
definitions, the templates, the libraries' machinery) for its whole life, and then works in batches: an intake
request's rows, views and results, a dispatch batch's leads, decisions, rendered emails and messages, all alive until
the batch ends. Python's collector, tuned for neither, walked both again and again:

- every full collection scanned the whole start-up heap (about 2 ms per intake request of 100 events, by profile):
  :func:`gc.freeze` moves it out of the collector's reach;
- every 700 allocations a young collection walked the batch's objects alive so far and moved them on to be walked
  once more in the next generation: collecting the youngest generation every :data:`YOUNG_COLLECTION` allocations
  cost about 5% less CPU per intake event (``bench/intake_cpu.py``) and 10-13% less per email
  (``bench/dispatch_cpu.py``).

Garbage without cycles is freed by reference counting as before, frozen objects included; only cycles wait longer.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION = 10_000
"""Allocations (less deallocations) between two collections of the youngest generation (Python's default: 700)."""

_settled = False


def settle_after_start_up() -> None:
    """Freeze what is alive now and collect the youngest generation less often; once per process (later calls,
    from a second app or worker in the same process, do nothing)."""
    global _settled  # noqa: PLW0603 - a once-per-process flag
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    if young:  # 0: the process turned collection off, and so it stays
        gc.set_threshold(max(young, YOUNG_COLLECTION), *older)
