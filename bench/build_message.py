"""Messages per second: ``build_message_bytes`` versus ``EmailMessage`` + ``as_bytes`` for the same content.

Run: ``.venv/bin/python bench/build_message.py [--count N]``.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime

from nurture.delivery.message import OutgoingEmail, build_message_bytes, message_id_for

TEXT = (
    "Hi {name},\n\nThanks for downloading our guide. Here are three ways teams like yours cut onboarding time in half:\n\n"
    "1. Automate the first week.\n2. Measure activation, not sign-ups.\n3. Talk to every churned trial.\n\n"
    "Read the full story: https://example.com/stories/onboarding?utm_source=nurture&utm_campaign=welcome\n\n"
    "Cheers,\nAda from Example\n"
)
HTML = "<html><body>" + "".join(f"<p>{line}</p>" for line in TEXT.splitlines() if line) + "</body></html>\n"


def sample(index: int) -> OutgoingEmail:
    """One realistic nurture email for lead number ``index``."""
    name = "Zoë" if index % 4 == 0 else "Sam"
    return OutgoingEmail(
        message_id=message_id_for(f"enrollment-{index}:step-1", "example.com"),
        from_addr="Ada at Example <ada@example.com>",
        to_addr=f"{name} Lead{index} <lead{index}@example.org>",
        subject=f"{name}, three ways to cut onboarding time",
        html=HTML.format(name=name),
        text=TEXT.format(name=name),
        list_unsubscribe_url=f"https://example.com/u/{index}?sig=abcdef0123456789",
    )


def with_email_message(email: OutgoingEmail, date: datetime) -> bytes:
    """The same message through the standard library's EmailMessage API."""
    message = EmailMessage()
    message["From"] = email.from_addr
    message["To"] = email.to_addr
    message["Subject"] = email.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = email.message_id
    if email.list_unsubscribe_url:
        message["List-Unsubscribe"] = f"<{email.list_unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message.as_bytes()


def rate(build, emails: list[OutgoingEmail], date: datetime) -> float:
    """Messages per second of ``build`` over ``emails`` (best of three runs)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for email in emails:
            build(email, date)
        best = min(best, time.perf_counter() - started)
    return len(emails) / best


def main() -> None:
    """Print both rates side by side."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000, help="messages per run (default 5000)")
    args = parser.parse_args()
    emails = [sample(index) for index in range(args.count)]
    date = datetime(2024, 5, 1, 9, 30, tzinfo=timezone.utc)
    direct = rate(lambda email, when: build_message_bytes(email, date=when), emails, date)
    stdlib = rate(with_email_message, emails[: max(1, args.count // 5)], date)
    print(f"{'build_message_bytes':<28}{direct:>12,.0f} msg/s")
    print(f"{'EmailMessage + as_bytes':<28}{stdlib:>12,.0f} msg/s")
    print(f"{'speed-up':<28}{direct / stdlib:>12.1f} x")


if __name__ == "__main__":
    main()
