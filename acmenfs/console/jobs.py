"""Long console operations (snapshot, clone, revert, extend, delete) run as background jobs.

Owns ``Job`` (what runs, for whom, its progress and outcome) and ``JobRunner``
(a small thread pool, so a long copy never runs on the event loop that also
carries NFS, and never holds a request open). The page polls a job's status
while it runs. A failed job keeps the API's problem document for its error. It
must not know what the operations do: each job is a function given a progress
callback that returns the URL to show when done.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from acmenfs.appliance.errors import ApplianceError

logger = logging.getLogger(__name__)

MAX_KEPT_JOBS = 200
JOB_THREADS = 4

Work = Callable[[Callable[[int, int], None]], str]


@dataclass
class Job:
    """One operation: ``state`` is running, done or failed; ``progress`` is (done, total) or None."""

    id: str
    title: str
    owner: str  # the token id that started it
    back_url: str
    state: str = "running"
    progress: tuple[int, int] | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result_url: str | None = None
    problem: dict[str, Any] | None = None

    def report(self, done: int, total: int) -> None:
        self.progress = (done, total)

    def percent(self) -> int | None:
        if self.progress is None or self.progress[1] <= 0:
            return None
        done, total = self.progress
        return max(0, min(100, int(done * 100 / total)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "state": self.state, "percent": self.percent(),
            "elapsed": round((self.finished or time.time()) - self.started, 1),
            "result_url": self.result_url, "back_url": self.back_url, "problem": self.problem,
        }


class JobRunner:
    """Runs jobs on a few worker threads and keeps the latest ones to answer status polls."""

    def __init__(self, problem: Callable[[ApplianceError], dict[str, Any]], threads: int = JOB_THREADS) -> None:
        self._problem = problem
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, title: str, owner: str, back_url: str, work: Work) -> Job:
        job = Job(str(uuid.uuid4()), title, owner, back_url)
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="console-job")
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_KEPT_JOBS:
                self._jobs.popitem(last=False)
            executor = self._executor
        executor.submit(self._run, job, work)
        return job

    def get(self, job_id: str, owner: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def _run(self, job: Job, work: Work) -> None:
        try:
            job.result_url = work(job.report)
            job.state = "done"
        except ApplianceError as exc:
            job.problem = self._problem(exc)
            job.state = "failed"
        except Exception:
            logger.exception("console job %r failed", job.title)
            job.problem = {"title": "Internal Server Error", "status": 500, "code": "internal_error",
                           "detail": "internal server error; the appliance log has the details"}
            job.state = "failed"
        finally:
            job.finished = time.time()

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
