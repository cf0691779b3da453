"""Durable jobs that must finish even across failures and restarts, retried with back-off."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from ddmail_backend.models import Job
from ddmail_common.db import Database

log = logging.getLogger(__name__)
MAX_BACKOFF = 300

Handler = Callable[[dict[str, Any]], None]


class JobQueue:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.handlers: dict[str, Handler] = {}
        self._stop = threading.Event()

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    def enqueue(self, kind: str, payload: dict[str, Any]) -> int:
        with self.db.session() as s:
            job = Job(
                kind=kind,
                payload=json.dumps(payload),
                attempts=0,
                next_run_at=int(time.time()),
                done=False,
            )
            s.add(job)
            s.flush()
            return job.id

    def run_one(self, job_id: int) -> bool:
        """Try one job now; True when it is done."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.done:
                return True
            kind, payload = job.kind, json.loads(job.payload)
        try:
            self.handlers[kind](payload)
        except Exception as exc:
            with self.db.session() as s:
                job = s.get(Job, job_id)
                if job is not None:
                    job.attempts += 1
                    job.next_run_at = int(time.time()) + min(MAX_BACKOFF, 2**job.attempts)
                    job.last_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("job %s (%s) failed, will retry: %s", job_id, kind, type(exc).__name__)
            return False
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.done = True
                job.last_error = None
        return True

    def run_due(self) -> int:
        """Run every job that is due; return how many are still pending."""
        with self.db.session() as s:
            due = list(
                s.execute(
                    select(Job.id)
                    .where(Job.done.is_(False), Job.next_run_at <= int(time.time()))
                    .order_by(Job.id)
                ).scalars()
            )
        return sum(0 if self.run_one(job_id) else 1 for job_id in due)

    def pending(self) -> int:
        with self.db.session() as s:
            return len(s.execute(select(Job.id).where(Job.done.is_(False))).all())

    def start(self, interval: float = 2.0, periodic: Callable[[], None] | None = None) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    if periodic is not None:
                        periodic()
                    self.run_due()
                except Exception as exc:
                    log.warning("job loop: %s", type(exc).__name__)

        threading.Thread(target=loop, name="ddmail-jobs", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
