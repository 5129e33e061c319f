"""The ``rq worker`` class Devex runs: ``rq worker -w jobs.worker.DevexWorker
--with-scheduler devex``.

Warm horses: rq forks a fresh work horse for every job. Plain ``rq.Worker`` leaves each
horse to import the job module and build its clients (settings, Redis, storage, runtime,
catalogue) again, about 0.2 s a job. This class does both once in the worker, before any
fork, so every horse starts warm (as gunicorn's ``--preload`` does). Nothing here opens a
connection: the Redis pool reconnects in a child (redis-py checks the pid), the other
clients connect on use.

Outages and kills (rq 2.12 as it is): the dequeue loop retries a lost connection, but a
Redis error anywhere else in ``Worker.work`` -- the suspension check, maintenance, the
heartbeats sent while a job runs, recording a job's end, a hung server's timeout -- ends
the worker ("found an unhandled exception, quitting"), and its scheduler process dies on
the first error and is looked for again only every 10 minutes. Here those hooks wait for
Redis instead, the scheduler survives outages (``jobs/scheduler.py``), and a scheduler
process that is gone anyway (SIGKILL, OOM) is restarted within ``SCHEDULER_CHECK`` s.
"""

from __future__ import annotations

import time

from rq import Worker, worker_registration
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT

from jobs.scheduler import REDIS_DOWN, DevexScheduler

# Seconds between checks that this worker's scheduler process runs (or that another
# worker's holds the lock); also the longest a blocking dequeue waits before looking.
SCHEDULER_CHECK = 10


class DevexWorker(Worker):
    # rq's dequeue loop retries a lost connection with a doubling wait capped at 60 s; 5 s
    # puts the worker back at work within seconds of Redis' return.
    max_connection_wait_time = 5.0

    def __init__(self, *args, **kwargs):
        self._burst = False
        self._scheduler_checked = 0.0
        self._reported_dead_scheduler: int | None = None
        self._redis_lost = False
        super().__init__(*args, **kwargs)

    def work(self, burst: bool = False, **kwargs):
        import jobs.periodic  # noqa: F401 - imported before the fork, not in every horse
        import jobs.repl  # noqa: F401
        from devex.startup import exit_on_config_error
        from jobs import context

        with exit_on_config_error():  # one line and exit 2, not rq's logged traceback
            context.get()
        self._burst = burst
        return super().work(burst=burst, **kwargs)

    # -- the scheduler: ours, and kept running --------------------------------------------
    def _start_scheduler(self, burst=False, logging_level="INFO",
                         date_format=DEFAULT_LOGGING_DATE_FORMAT,
                         log_format=DEFAULT_LOGGING_FORMAT):
        """``BaseWorker._start_scheduler`` with ``DevexScheduler`` in place of RQScheduler
        (rq 2.12 has no setting for the class)."""
        from jobs import context

        self.scheduler = DevexScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
            settings=context.get().settings,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    @property
    def dequeue_timeout(self) -> int:
        # The loop must come round while idle to notice a dead scheduler process.
        return min(super().dequeue_timeout, SCHEDULER_CHECK)

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return super().should_run_maintenance_tasks or self._scheduler_check_due()

    def run_maintenance_tasks(self):
        try:
            if super().should_run_maintenance_tasks:
                super().run_maintenance_tasks()
            if self._scheduler_check_due():
                self._keep_scheduler_running()
        except REDIS_DOWN as exc:
            self._note_redis_lost("maintenance", exc)  # tried again next round

    def _scheduler_check_due(self) -> bool:
        return (self.scheduler is not None and not self._burst
                and time.monotonic() - self._scheduler_checked >= SCHEDULER_CHECK)

    def _keep_scheduler_running(self) -> None:
        self._scheduler_checked = time.monotonic()
        process = self.scheduler._process  # as rq's own run_maintenance_tasks reads it
        if process is not None and process.is_alive():
            return
        if process is not None and process.pid != self._reported_dead_scheduler:
            self._reported_dead_scheduler = process.pid
            self.log.warning("Worker %s: scheduler process %s ended (exit code %s); starting "
                             "another if the lock is free", self.name, process.pid,
                             process.exitcode)
        # Our own lock (same scheduler name) is re-taken at once; another worker's is not.
        self.scheduler.acquire_locks(auto_start=True)

    # -- Redis away: wait, never quit -----------------------------------------------------
    def check_for_suspension(self, burst: bool):
        try:
            super().check_for_suspension(burst)
        except REDIS_DOWN as exc:
            self._wait_for_redis("suspension check", exc)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except REDIS_DOWN as exc:  # rq retries ConnectionError, but quits on a timeout
                self._wait_for_redis("dequeue", exc)

    def execute_job(self, job, queue):
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN as exc:
            # The keep-alive writes below never raise, so the horse has ended (or never
            # started) by now; only the bookkeeping of that failed. The job stays in the
            # started registry and RQ's registry cleanup finds it when its heartbeat lapses.
            self._wait_for_redis(f"job {job.id}", exc)

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        try:
            with self.connection.pipeline() as pipe:
                super().heartbeat(timeout, pipe)
                # Same round trip: are we still listed? Not after Redis came back empty.
                pipe.sismember(self.redis_workers_keys, self.key)
                listed = pipe.execute()[-1]
        except REDIS_DOWN as exc:
            self._note_redis_lost("heartbeat", exc)
            return
        self._note_redis_back()
        if not listed:
            self._register_again()

    def maintain_heartbeats(self, job):
        # Sent every job_monitoring_interval while a horse runs: one missed during an
        # outage is harmless, quitting would orphan the running job.
        try:
            super().maintain_heartbeats(job)
        except REDIS_DOWN as exc:
            self._note_redis_lost(f"job {job.id} heartbeat", exc)
            return
        self._note_redis_back()

    def set_current_job_working_time(self, current_job_working_time, pipeline=None):
        if pipeline is not None:
            return super().set_current_job_working_time(current_job_working_time, pipeline)
        try:
            super().set_current_job_working_time(current_job_working_time)
        except REDIS_DOWN as exc:
            self._note_redis_lost("working time", exc)

    def teardown(self):
        try:
            super().teardown()
        except REDIS_DOWN as exc:  # stopping anyway; our key lapses by its TTL
            self.log.warning("Worker %s: could not register its death: %s", self.name, exc)

    def _note_redis_lost(self, where: str, exc: Exception) -> None:
        # Said once per outage; the repeats (every heartbeat until it ends) only in debug.
        log = self.log.debug if self._redis_lost else self.log.warning
        self._redis_lost = True
        log("Worker %s: Redis unreachable (%s: %s)", self.name, where, exc)

    def _note_redis_back(self) -> None:
        if self._redis_lost:
            self._redis_lost = False
            self.log.warning("Worker %s: Redis is back", self.name)

    def _wait_for_redis(self, where: str, exc: Exception) -> None:
        """Back off until Redis answers. rq's SIGTERM handler still ends the worker."""
        self._note_redis_lost(where, exc)
        delay = 1.0
        while True:
            time.sleep(delay)
            try:
                self.connection.ping()
                break
            except REDIS_DOWN:
                delay = min(delay * 2, self.max_connection_wait_time)
        self._note_redis_back()

    def _register_again(self) -> None:
        """Redis came back without our records (restarted without its data): register
        again, so that nothing judging workers by RQ's registry takes this one for dead."""
        try:
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, mapping=self.serialize())
                pipe.hset(self.key, "state", self.get_state())
                worker_registration.register(self, pipe)
                pipe.expire(self.key, self.worker_ttl + 60)
                pipe.execute()
        except REDIS_DOWN as exc:
            self._note_redis_lost("register again", exc)
            return
        self.log.warning("Worker %s: registered again (Redis had lost its records)", self.name)
