"""Run one benchmark script in two checkouts of nurture, taking turns, and print each side's output.

A change to the code (a refactor, an optimisation) is judged against the code before it, on the same machine, in the
same session: this runs ``bench/SCRIPT ARGS`` with each checkout's own virtual environment, ``--rounds`` times each,
alternating (before, after, before, after, ...), so that a machine that slows down or warms up favours neither side.
Each checkout needs its own ``.venv`` with nurture installed (``pip install -e '.[dev]'``)::

    git worktree add /tmp/before <commit> && (cd /tmp/before && python3 -m venv .venv && .venv/bin/pip install -e .)
    .venv/bin/python bench/side_by_side.py --before /tmp/before --after . --rounds 2 -- intake.py --events 3000

The lines each run prints are shown prefixed by its side and round; ``--grep`` keeps only the lines that match.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path


def run(checkout: Path, script: str, args: list[str]) -> tuple[int, str, float]:
    """Run ``bench/script`` of ``checkout`` with its own interpreter; (exit code, output, seconds)."""
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} not found: create the checkout's virtual environment first")
    started = time.perf_counter()
    done = subprocess.run(
        [str(python), str(checkout / "bench" / script), *args], cwd=checkout, capture_output=True, text=True,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the checkout of the code before the change")
    parser.add_argument("--after", type=Path, required=True, help="the checkout of the code after the change")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating (default 2)")
    parser.add_argument("--grep", help="print only the output lines matching this regular expression")
    parser.add_argument("script", help="the benchmark script in bench/, e.g. intake.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (after --)")
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    pattern = re.compile(options.grep) if options.grep else None
    failed = False
    for round_number in range(1, options.rounds + 1):
        for side, checkout in (("before", options.before), ("after", options.after)):
            code, output, seconds = run(checkout.resolve(), options.script, args)
            print(f"=== {side}, round {round_number}: {options.script} {' '.join(args)} ({seconds:.0f} s, exit {code})")
            for line in output.splitlines():
                if pattern is None or pattern.search(line) or code != 0:
                    print(f"{side}[{round_number}] {line}")
            sys.stdout.flush()
            failed = failed or code != 0
    if failed:
        raise SystemExit("a run failed: see its output above")


if __name__ == "__main__":
    main()
