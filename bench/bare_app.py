"""The baselines for ``http_wrk``: a bare Flask endpoint, and the same endpoint after one
Redis round trip (``Redis.ping()``, the client Devex uses) -- what any design that reads
Redis on every request pays before doing anything else."""

import os
from functools import cache

import redis
from flask import Flask

app = Flask(__name__)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["DEVEX_REDIS_URL"])


@app.get("/hello")
def hello():
    return {"ok": True}


@app.get("/hello-after-ping")
def hello_after_ping():
    _redis().ping()
    return {"ok": True}


@app.get("/healthz")
def healthz():
    return {"ok": True}
