"""The ``rq worker`` class Devex runs: ``rq worker -w jobs.worker.DevexWorker devex``.

rq forks a fresh work horse for every job. Plain ``rq.Worker`` leaves each horse to import
the job module and build its clients (settings, Redis, storage, runtime, catalogue) again,
about 0.2 s a job. This class does both once in the worker, before any fork, so every horse
starts warm (as gunicorn's ``--preload`` does). Nothing here opens a connection: the Redis
pool reconnects in a child (redis-py checks the pid), the other clients connect on use.
"""

from __future__ import annotations

from rq import Worker


class DevexWorker(Worker):
    def work(self, *args, **kwargs):
        import jobs.periodic  # noqa: F401 - imported before the fork, not in every horse
        import jobs.repl  # noqa: F401
        from jobs import context

        context.get()
        return super().work(*args, **kwargs)
