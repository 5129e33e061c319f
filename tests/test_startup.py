"""Every entry point -- ``flask run``, ``flask devex ...``, gunicorn, ``rq worker`` -- stops
on a bad setting with one line naming it, no traceback; and each reads ``.env`` the way
``flask`` does, a variable of the real environment winning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devex.startup import load_env_file

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
        dotenv: str = "") -> subprocess.CompletedProcess:
    """``args`` in ``tmp_path`` (holding ``dotenv`` as ``.env``), with the checkout
    importable and no DEVEX_* setting but ``env``."""
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEVEX_")}
    base.update({"PYTHONPATH": str(ROOT), "DEVEX_DATA_DIR": str(tmp_path / "data"),
                 **(env or {})})
    program = str(BIN / args[0])  # flask, gunicorn, rq of this venv; or an absolute path
    return subprocess.run([program, *args[1:]], cwd=tmp_path, env=base, capture_output=True,
                          text=True, timeout=120)


def assert_one_line(result: subprocess.CompletedProcess, line: str, status: int = 2) -> None:
    assert result.returncode == status, result.stdout + result.stderr
    assert result.stderr.strip() == line
    assert "Traceback" not in result.stdout + result.stderr


FLASK_RUN = ("flask", "--app", "devex", "run", "--port", "0")
MANIFESTS = ("flask", "--app", "devex", "devex", "manifests", "--template", "python")
GUNICORN = ("gunicorn", "-c", "python:devex.gunicorn_conf", "wsgi:app", "--bind", "127.0.0.1:0")
RQ_WORKER = ("rq", "worker", "-c", "devex.rq_config", "-w", "jobs.worker.DevexWorker", "devex")


@pytest.mark.parametrize(("args", "setting", "line"), [
    (FLASK_RUN, {"DEVEX_QUOTA_REPLS": "lots"}, "Error: DEVEX_QUOTA_REPLS must be an integer"),
    (FLASK_RUN + ("--debug",), {"DEVEX_AUTH": "ldap"},
     "Error: DEVEX_AUTH must be 'local' or 'github'"),
    (MANIFESTS, {"DEVEX_K8S_STORAGE_PORTS": "http"},
     "Error: DEVEX_K8S_STORAGE_PORTS: 'http' is not a TCP port (1-65535)"),
    (("flask", "--app", "devex", "devex", "repls", "list"), {"DEVEX_LOCK_LEASE": "0"},
     "Error: DEVEX_LOCK_LEASE must be positive"),
    (GUNICORN, {"DEVEX_CORS_ORIGINS": "*"}, "Error: DEVEX_CORS_ORIGINS: '*' is not an origin "
     "like https://ide.example.com (no '*', path or trailing slash)"),
    (RQ_WORKER, {"DEVEX_STORAGE": "s3"}, "Error: DEVEX_STORAGE=s3 needs DEVEX_S3_BUCKET"),
], ids=["flask-run", "flask-run-debug", "flask-devex-manifests", "flask-devex-repls",
        "gunicorn", "rq-worker"])
def test_a_bad_setting_stops_the_entry_point_with_one_line(tmp_path, args, setting, line):
    assert_one_line(run(tmp_path, *args, env=setting), line)


def test_a_bad_setting_stops_gunicorn_without_its_config_file_too(tmp_path):
    """``gunicorn wsgi:app``: the worker says the line and exits with gunicorn's "App failed
    to load", so the master stops instead of booting worker after worker."""
    result = run(tmp_path, "gunicorn", "wsgi:app", "--bind", "127.0.0.1:0",
                 env={"DEVEX_RUNTIME": "kubernetes"})
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: DEVEX_RUNTIME=kubernetes needs DEVEX_STORAGE=s3: pods fetch and "
                      "save their files through object storage"]
    assert "Reason: App failed to load." in result.stderr
    assert result.stderr.count("Booting worker") == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_setting_stops_an_rq_worker_started_without_the_config_module(tmp_path,
                                                                         redis_url):
    result = run(tmp_path, "rq", "worker", "-w", "jobs.worker.DevexWorker", "--url", redis_url,
                 "devex", env={"DEVEX_K8S_DNS_EGRESS": "kube-dns"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: DEVEX_K8S_DNS_EGRESS: 'kube-dns' is not a CIDR: 'kube-dns' does not appear to "
        "be an IPv4 or IPv6 network")
    assert "Traceback" not in result.stdout + result.stderr


# -- .env ----------------------------------------------------------------------------------
DOTENV = "DEVEX_QUOTA_REPLS=7\nDEVEX_QUOTA_RUNNING=9\n"


def test_flask_reads_dotenv_and_the_environment_wins(tmp_path):
    result = run(tmp_path, *MANIFESTS, env={"DEVEX_K8S_NAMESPACE": "from-env"},
                 dotenv="DEVEX_K8S_INGRESS_CLASS=traefik\nDEVEX_K8S_NAMESPACE=from-dotenv\n")
    assert result.returncode == 0, result.stderr
    assert "# namespace from-env;" in result.stdout
    assert "ingressClassName: traefik" in result.stdout


def test_gunicorns_app_import_reads_dotenv_and_the_environment_wins(tmp_path):
    show = ("import wsgi; s = wsgi.app.extensions['devex'].settings; "
            "print(s.quota_repls, s.quota_running)")
    result = run(tmp_path, sys.executable, "-c", show, env={"DEVEX_QUOTA_RUNNING": "3"},
                 dotenv=DOTENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "3"]


def test_gunicorns_master_reads_dotenv(tmp_path):
    """The config file checks the settings ``.env`` gives before any worker boots."""
    assert_one_line(run(tmp_path, *GUNICORN, dotenv="DEVEX_LOG_FORMAT=yaml\n"),
                    "Error: DEVEX_LOG_FORMAT must be 'json' or 'text'")


def test_the_rq_workers_settings_read_dotenv_and_the_environment_wins(tmp_path):
    dotenv = DOTENV + "DEVEX_REDIS_URL=redis://127.0.0.1:9/5\nDEVEX_QUEUE_NAME=from-dotenv\n"
    config = run(tmp_path, sys.executable, "-c",
                 "from devex import rq_config; print(rq_config.REDIS_URL, *rq_config.QUEUES)",
                 env={"DEVEX_QUEUE_NAME": "from-env"}, dotenv=dotenv)
    assert config.returncode == 0, config.stderr
    assert config.stdout.split() == ["redis://127.0.0.1:9/5", "from-env"]
    # What the worker's jobs use (jobs.context), built without rq_config: no connection yet.
    jobs = run(tmp_path, sys.executable, "-c",
               "from jobs import context; s = context.get().settings; "
               "print(s.redis_url, s.quota_repls, s.quota_running)",
               env={"DEVEX_QUOTA_RUNNING": "3"})
    assert jobs.returncode == 0, jobs.stderr
    assert jobs.stdout.split() == ["redis://127.0.0.1:9/5", "7", "3"]


def test_dotenv_is_read_as_flask_reads_it(tmp_path, monkeypatch):
    """From the working directory up; ``.env`` over ``.flaskenv``; set variables win."""
    (tmp_path / ".flaskenv").write_text("DEVEX_T_A=flaskenv\nDEVEX_T_B=flaskenv\n")
    (tmp_path / ".env").write_text("DEVEX_T_B=dotenv\nDEVEX_T_C=dotenv\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    for name in ("DEVEX_T_A", "DEVEX_T_B"):  # gone again after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("DEVEX_T_C", "real")
    load_env_file()
    assert [os.environ[f"DEVEX_T_{x}"] for x in "ABC"] == ["flaskenv", "dotenv", "real"]


def test_env_example_copied_to_dotenv_is_a_working_configuration(tmp_path):
    """``cp .env.example .env`` and edit: the copy as it is gives the defaults."""
    import dotenv

    from devex.config import Settings

    example = dotenv.dotenv_values(ROOT / ".env.example")
    assert Settings.from_env({k: v for k, v in example.items() if v is not None}) == \
        Settings.from_env({})
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    result = run(tmp_path, *MANIFESTS)
    assert result.returncode == 0, result.stderr
