"""CPU per email of the worker's in-process work: render (subject, HTML, text), sign the links, build the message.

    .venv/bin/python bench/render_cpu.py --emails 5000 --repeat 7      # ms of CPU per email, the bench campaign
    .venv/bin/python bench/render_cpu.py --decide                      # and the engine's decision for each
    .venv/bin/python bench/render_cpu.py --digest                      # a digest of every shipped email's bytes

``--digest`` renders and builds every email step, variant and stream piece of the shipped campaigns for a few leads
(plain, non-ASCII, missing fields, markup and odd spacing in their values) at a fixed date, and prints the SHA-256
of all the bytes: the same digest before and after a change means the same bytes on the wire.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_project

ROOT = Path(__file__).resolve().parents[1]
DATE = datetime(2024, 5, 1, 9, 30, tzinfo=timezone.utc)


def _emails(catalog, renderer, signer, leads, base_url="http://127.0.0.1:8000"):
    """(campaign, action, lead) of every email step of ``catalog`` for each of ``leads``."""
    from nurture.core.engine import Action

    for campaign in catalog.campaigns.values():
        for step in campaign.steps:
            actions = []
            if step.email is not None:
                for variant, _weight, template, subject in step.email.resolved_variants():
                    actions.append(Action("email", step.id, step.id, DATE, template, subject, variant))
            if step.stream is not None:
                for item in step.stream.content:
                    actions.append(Action("email", step.id, f"{step.id}/{item.id}", DATE, item.template, item.subject,
                                          content=item))
            for action in actions:
                for lead in leads:
                    yield campaign, action, lead


def _leads():
    from nurture.core.facts import lead_from_mapping

    return [
        lead_from_mapping({"id": 1, "email": "dana@example.com", "first_name": "Dana", "company": "Northwind",
                           "industry": "Logistics", "title": "Head of Ops", "country": "US"}),
        lead_from_mapping({"id": 2, "email": "zoe@example.org", "first_name": "Zoë", "last_name": "Ångström",
                           "company": "Café Ünïcode GmbH", "title": "Geschäftsführerin"}),
        lead_from_mapping({"id": 3, "email": "x@example.net"}),
        lead_from_mapping({"id": 4, "email": "odd@example.com", "first_name": "<b>Bob</b> & Co", "company": " Spaced  Inc ",
                           "title": "a\nb", "industry": "#tag"}),
        lead_from_mapping({"id": 5, "email": "long@example.com", "first_name": "A" * 80, "company": "javascript:x",
                           "title": "\ue000 0 \ue001", "country": "Ελλάδα"}),
    ]


def digest() -> str:
    """SHA-256 of every shipped email's bytes (rendered, built) and of every render error's text."""
    from nurture.application.compose import render_action
    from nurture.definitions.loader import load_catalog
    from nurture.delivery import OutgoingEmail, build_message_bytes
    from nurture.rendering import EmailRenderer, LinkBuilder
    from nurture.signing import Signer

    catalog = load_catalog(ROOT / "campaigns", ROOT / "templates")
    renderer, signer = EmailRenderer(ROOT / "templates"), Signer("digest")
    sha = hashlib.sha256()
    count = 0
    for round_ in range(2):  # the second round renders from the caches the first filled
        for number, (campaign, action, lead) in enumerate(_emails(catalog, renderer, signer, _leads())):
            links = LinkBuilder("https://t.acme.example/", signer, str(number))
            try:
                rendered = render_action(renderer, campaign, action, lead, links)
                data = build_message_bytes(OutgoingEmail(f"<m{number}@acme.example>", "Acme Ünï <hello@acme.example>",
                                                         lead.email, rendered.subject, rendered.html, rendered.text,
                                                         links.unsubscribe()), date=DATE)
            except Exception as exc:  # noqa: BLE001 - an error is an answer too
                data = f"{type(exc).__name__}: {exc}".encode()
            sha.update(data)
            sha.update(b"\0")
            count += round_ == 0
    return f"{sha.hexdigest()} ({count} emails x 2)"


def bench(emails: int, repeat: int, profile: str | None, decide: bool) -> None:
    """CPU ms per email: render, sign, build, as the dispatcher does for the benchmark campaign (and ``decide``: the
    engine's decision before)."""
    from nurture.application.compose import render_action
    from nurture.core.engine import Action, EnrollmentState, advance
    from nurture.core.facts import History, lead_from_mapping
    from nurture.definitions.loader import load_catalog
    from nurture.delivery import OutgoingEmail, build_message_bytes
    from nurture.rendering import EmailRenderer, LinkBuilder
    from nurture.signing import Signer

    with tempfile.TemporaryDirectory() as tmp:
        campaigns, templates = write_project(Path(tmp), ROOT / "templates")
        catalog = load_catalog(campaigns, templates).raise_for_problems()
        renderer, signer = EmailRenderer(templates), Signer("bench")
        campaign = catalog.campaigns["bench"]
        step = campaign.steps[0]
        assert step.email is not None
        action = Action("email", step.id, step.id, DATE, step.email.template, step.email.subject)
        leads = [lead_from_mapping({"id": i + 1, "email": f"lead{i}@example.com", "first_name": f"Lead{i}",
                                    "company": "Acme", "stage": "mql"}) for i in range(emails)]

        def run() -> None:
            for i, lead in enumerate(leads):
                if decide:  # what the dispatcher's engine call costs for the email: the state in, the state out
                    state = EnrollmentState.from_row(step.id, DATE, DATE, {})
                    decided = advance(campaign, catalog.policy, state, lead, History(), DATE)
                    decided.state.to_json()
                    assert decided.actions[0] == action
                links = LinkBuilder("http://127.0.0.1:8000", signer, str(i + 1))
                rendered = render_action(renderer, campaign, action, lead, links)
                build_message_bytes(OutgoingEmail(f"<m{i}@acme.example>", "Acme <hello@acme.example>", lead.email,
                                                  rendered.subject, rendered.html, rendered.text, links.unsubscribe()),
                                    date=DATE)

        run()  # warm: templates compiled, caches filled
        figures = []
        for _ in range(repeat):
            started = time.process_time()
            run()
            figures.append((time.process_time() - started) / emails * 1000)
        figures.sort()
        print(f"{figures[0]:.4f} ms CPU per email at best, {figures[len(figures) // 2]:.4f} median of {repeat} "
              f"({', '.join(f'{f:.4f}' for f in figures)})", flush=True)
        if profile:
            profiler = cProfile.Profile()
            profiler.runcall(run)
            pstats.Stats(profiler).sort_stats(profile).print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--digest", action="store_true")
    parser.add_argument("--profile", choices=["tottime", "cumulative"])
    parser.add_argument("--decide", action="store_true", help="the engine's decision for each email too")
    args = parser.parse_args()
    if args.digest:
        print(digest())
    else:
        bench(args.emails, args.repeat, args.profile, args.decide)


if __name__ == "__main__":
    main()
