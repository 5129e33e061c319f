"""An RQ worker for tests that run jobs in the test's own thread, in burst mode."""

from __future__ import annotations

from rq import SimpleWorker
from rq.timeouts import TimerDeathPenalty


class ThreadWorker(SimpleWorker):
    # The default death penalty uses SIGALRM, which only the main thread may set.
    death_penalty_class = TimerDeathPenalty
