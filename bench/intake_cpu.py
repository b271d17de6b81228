"""CPU per event of batched intake, in process: ``POST /v1/events`` bodies of --batch events to --leads leads, read
(:func:`nurture.intake.context.parse_json`, :func:`nurture.intake.events.parse_events`), recorded as the HTTP intake
records them on PostgreSQL (one group of one request) and answered (the JSON body), without the HTTP server.

    .venv/bin/python bench/intake_cpu.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/NAME

Prints the process's CPU time per event (``time.process_time``, the database's own CPU aside) for each of --repeats
passes of --events events, after a warm-up pass that creates the leads. ``--profile FILE`` writes a cProfile of
the timed passes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import time
from pathlib import Path

import orjson

from nurture.intake.context import parse_json
from nurture.intake.events import parse_events
from nurture.service import http_app
from nurture.settings import Settings
from nurture.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["page_view", "email_open", "email_click", "content_download", "webinar_attended", "pricing_page_view"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--events", type=int, default=4000, help="events per timed pass")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile")
    args = parser.parse_args()
    upgrade(args.database_url)
    settings = Settings(database_url=args.database_url, api_key="bench-key", campaigns_dir=ROOT / "campaigns",
                        templates_dir=ROOT / "templates")
    intake = http_app(settings).state.intake
    tag = f"c{time.time_ns()}"
    counter = iter(range(10**9))

    def one_request() -> int:
        n = next(counter)
        items = [{"email": f"lead{(n * args.batch + i) % args.leads}@bench.example",
                  "type": TYPES[(n + i) % len(TYPES)], "id": f"{tag}-{n}-{i}"} for i in range(args.batch)]
        body = json.dumps({"events": items}, separators=(",", ":")).encode()
        started = time.process_time()
        events, _batch = parse_events(parse_json(body))
        (results,) = intake._record_group("api", [events])
        assert not isinstance(results, Exception), results
        recorded = sum(1 for result in results if result.status == "recorded")
        orjson.dumps({"recorded": recorded, "duplicate": len(results) - recorded,
                      "results": [r.to_json() for r in results]})
        return time.process_time() - started

    for _ in range(max(1, args.leads // args.batch)):  # the leads exist before the timed passes
        one_request()
    profile = cProfile.Profile(time.process_time) if args.profile else None
    requests: list[float] = []  # CPU seconds of each timed request
    for _ in range(args.repeats):
        spent = 0.0
        if profile is not None:
            profile.enable()
        for _ in range(args.events // args.batch):
            requests.append(one_request())
            spent += requests[-1]
        if profile is not None:
            profile.disable()
        print(f"{spent / args.events * 1e6:6.1f} us CPU/event", flush=True)
    # on a shared machine other processes inflate a request's CPU time (caches, the other hyperthread): the lower
    # deciles are the figure least moved by them
    requests.sort()
    shown = ", ".join(f"p{q} {requests[len(requests) * q // 100] / args.batch * 1e6:.1f}" for q in (10, 25, 50))
    print(f"per request, us CPU/event: {shown}", flush=True)
    if profile is not None:
        profile.dump_stats(args.profile)
    intake.close()


if __name__ == "__main__":
    main()
