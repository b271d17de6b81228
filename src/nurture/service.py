"""The service ``nurture run`` and ``nurture serve`` start: the HTTP intake on uvicorn, with the worker's jobs beside it in
the same process when there is a worker. The intake and the worker know nothing of each other; this module puts them
together (sharing the worker's database, definitions and signer, and waking its dispatcher when an event arrives).
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from nurture.definitions.loader import load_catalog
from nurture.intake.app import create_app
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.migrate import open_database
from nurture.storage.secrets import signing_secret
from nurture.worker.runner import Worker, definition_sources, sales_rules, scoring_rules

log = logging.getLogger(__name__)


def http_app(settings: Settings, worker: Worker | None = None) -> Any:
    """The intake app: sharing the worker's database, definitions and signer when there is one."""
    if worker is not None:
        return create_app(settings, engine=worker.engine, catalog=worker.catalog, rules=worker.scoring,
                          signer=worker.signer, on_event=worker.wake, sales=worker.sales)
    engine = open_database(settings.database_url)
    catalog = load_catalog(settings.campaigns_dir, settings.templates_dir).raise_for_problems()
    signer = Signer(signing_secret(engine, settings.secret_key))
    sources = definition_sources(settings, catalog)
    return create_app(settings, engine=engine, catalog=catalog, rules=scoring_rules(sources), signer=signer,
                      sales=sales_rules(sources))


def serve(settings: Settings, *, worker: Worker | None) -> None:
    """Run the HTTP intake on uvicorn in this thread (it handles SIGTERM/SIGINT), with the worker's jobs beside it."""
    import uvicorn

    app = http_app(settings, worker)
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                            access_log=False, lifespan="off")
    stop = worker.request_stop if worker is not None else (lambda *_args: None)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stop()  # the dispatcher stops claiming at once, not after the HTTP side has shut down
            super().handle_exit(sig, frame)

    server = Server(config)
    # uvicorn handles SIGTERM/SIGINT while it serves, then raises the signal again once it has shut down; with
    # handlers of our own in place that second delivery only asks the worker to stop, so the finally below runs
    # and the process exits 0 after the batches in flight are recorded.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if worker is not None:
        worker.start()
    log.info("HTTP intake on http://%s:%d (docs at /docs)", settings.http_host, settings.http_port)
    try:
        server.run()
    finally:
        app.state.intake.close()
        if worker is not None:
            worker.stop()
            worker.engine.dispose()
        else:
            app.state.intake.engine.dispose()
