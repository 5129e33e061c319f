"""The baseline for ``http_wrk``: a bare Flask endpoint."""

from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello():
    return {"ok": True}


@app.get("/healthz")
def healthz():
    return {"ok": True}
