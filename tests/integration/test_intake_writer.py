"""The intake's writer threads: jobs handed over from the event loop, answers and errors handed back, idle threads
retired and started again on demand."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nurture.intake.context import Writer


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nurture-intake-writer"]


def test_jobs_run_off_the_event_loop_and_answer_in_order():
    writer = Writer(1)
    loop_thread = threading.get_ident()
    ran_on: list[int] = []

    def job(n: int) -> int:
        ran_on.append(threading.get_ident())
        return n * n

    async def main() -> list[int]:
        return await asyncio.gather(*(writer.run(job, n) for n in range(50)))

    assert asyncio.run(main()) == [n * n for n in range(50)]
    assert len(set(ran_on)) == 1 and loop_thread not in ran_on


def test_a_failing_job_raises_in_the_caller_and_the_writer_goes_on():
    writer = Writer(1)

    def fail() -> None:
        raise ValueError("bad input")

    async def main() -> int:
        with pytest.raises(ValueError, match="bad input"):
            await writer.run(fail)
        return await writer.run(lambda: 7)

    assert asyncio.run(main()) == 7


def test_jobs_take_turns_on_one_thread_and_spread_over_several():
    for size, expected in ((1, 1), (3, 3)):
        writer = Writer(size)
        running = 0
        most = 0
        lock = threading.Lock()

        def job() -> None:
            nonlocal running, most
            with lock:  # noqa: B023 - job runs within this pass of the loop
                running += 1
                most = max(most, running)
            time.sleep(0.02)
            with lock:  # noqa: B023
                running -= 1

        async def main() -> None:
            await asyncio.gather(*(writer.run(job) for _ in range(9)))  # noqa: B023

        asyncio.run(main())
        assert most == expected


def test_idle_threads_end_and_a_new_job_starts_one_again(monkeypatch):
    monkeypatch.setattr(Writer, "IDLE_SECONDS", 0.05)
    writer = Writer(2)
    before = set(writer_threads())  # other tests' writers may still be winding down: follow this writer's own

    async def burst() -> list[int]:
        return await asyncio.gather(*(writer.run(lambda n=n: n) for n in range(4)))

    assert asyncio.run(burst()) == [0, 1, 2, 3]
    started = set(writer_threads()) - before
    assert 1 <= len(started) <= 2
    deadline = time.monotonic() + 5
    while any(thread.is_alive() for thread in started) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(thread.is_alive() for thread in started) and writer._alive == 0
    assert asyncio.run(burst()) == [0, 1, 2, 3]


def test_an_answer_for_a_caller_that_gave_up_is_dropped():
    writer = Writer(1)
    release = threading.Event()

    async def main() -> int:
        slow = asyncio.ensure_future(writer.run(release.wait))
        await asyncio.sleep(0.01)
        slow.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return await writer.run(lambda: 1)  # the writer is not stuck on the cancelled answer

    assert asyncio.run(main()) == 1


def test_an_app_settles_the_collector_once_it_is_built(tmp_path, monkeypatch):
    from nurture.intake import app as app_module
    from nurture.service import http_app
    from nurture.settings import Settings
    from nurture.storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'n.db'}"
    upgrade(url)
    settled: list[bool] = []
    monkeypatch.setattr(app_module, "settle_after_start_up", lambda: settled.append(True))
    http_app(Settings(database_url=url, campaigns_dir=tmp_path, templates_dir=tmp_path))
    assert settled == [True]  # nurture.heap: start-up frozen, the youngest generation collected less often
