"""The daemon loop every kind of worker shares: register, step until the server says training is over,
register again when the server has forgotten the worker (it restarted), and stop cleanly when asked."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from asyncrl.worker.actor import Actor
from asyncrl.worker.outcomes import StaleGradients, Stopped, UnknownWorker

log = logging.getLogger(__name__)


class Steps(Protocol):
    """A worker the loop drives: a training Worker (worker/daemon.py) or an EvaluationWorker."""

    stop: threading.Event
    worker_id: int
    actor: Actor | None

    def register(self) -> object: ...

    def step(self) -> bool:
        """One round of work; True when the server says training is over."""
        ...

    def progress(self) -> str:
        """What the worker has done so far, for the log ("12 pushes")."""
        ...


def run_until_done(worker: Steps) -> int:
    """Loops until the server says training is over or stop is set; returns 0 either way."""
    try:
        worker.register()
        while not worker.stop.is_set():
            try:
                if worker.step():
                    log.info("server says training is over after %s; exiting", worker.progress())
                    return 0
            except UnknownWorker:
                log.warning("server no longer knows worker %d; registering again", worker.worker_id)
                worker.register()
            except StaleGradients as stale:
                log.info("push refused as stale (%s); pulling again", stale)
    except Stopped:
        pass
    finally:
        if worker.actor is not None:
            worker.actor.close()
    log.info("stopped after %s", worker.progress())
    return 0
