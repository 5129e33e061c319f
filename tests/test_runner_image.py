"""The runner as its image ships it: the files runner/Dockerfile copies, in a fresh venv that
holds runner/requirements.txt only (no Flask, Redis or ``devex``), run the way the image's
``CMD`` runs it: ``serve`` answers, ``sync-up`` and ``sync-down`` move files through S3.

A runner module that imported something outside its image would fail here, not in a pod.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
import requests

from devex_shared import access_tokens
from tests.support.moto_server import s3_client
from tests.support.ports import free_port
from tests.support.runner_process import REPO
from tests.support.waiting import wait_for

DOCKERFILE = REPO / "runner" / "Dockerfile"
SECRET = "image-test-secret"


@dataclass
class Image:
    """The image's files under ``root`` (``/opt/devex`` is ``root/opt/devex``), its
    ``PYTHONPATH`` mapped the same way, and the python of a venv like ``/opt/runner``."""

    root: Path
    pythonpath: Path
    python: Path

    def env(self, **extra: str) -> dict[str, str]:
        # Nothing from the test's own environment that could find modules or settings.
        keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(HOME=str(self.root / "tmp"), PYTHONPATH=str(self.pythonpath),
                   PYTHONDONTWRITEBYTECODE="1")
        env.update(extra)
        return env

    def run(self, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), "-m", "runner", *args], cwd=cwd,
                              env=self.env(**env), capture_output=True, text=True, timeout=120)


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(instruction, the rest) per instruction, continuation lines joined, comments out."""
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):  # Docker drops comments inside continuations too
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            word, _, rest = logical.strip().partition(" ")
            yield word.upper(), rest
        logical = ""


def build_file_set(root: Path) -> Path:
    """Copy what runner/Dockerfile's ``COPY`` lines copy (from the repository, the build
    context) to where they put it, under ``root``; returns its ``PYTHONPATH`` there."""
    workdir = PurePosixPath("/")
    pythonpath = None
    for word, rest in dockerfile_instructions(DOCKERFILE.read_text()):
        args = shlex.split(rest) if word in ("WORKDIR", "ENV", "COPY") else []
        if word == "WORKDIR":
            workdir = workdir / args[0]
        elif word == "ENV":
            for pair in args:
                name, _, value = pair.partition("=")
                if name == "PYTHONPATH":
                    pythonpath = value
        elif word == "COPY":
            *sources, dest = [a for a in args if not a.startswith("--")]
            target = root / (workdir / dest).relative_to("/")
            for source in sources:
                src = REPO / source
                if src.is_dir():  # a directory's contents, as Docker copies them
                    shutil.copytree(src, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    into = target / src.name if dest.endswith("/") else target
                    into.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, into)
    assert pythonpath, "runner/Dockerfile sets no PYTHONPATH"
    return root / PurePosixPath(pythonpath).relative_to("/")


@pytest.fixture(scope="session")
def runner_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (not seeing this one's packages) with runner/requirements.txt only,
    built once per session: creating it and installing takes ~20 s."""
    venv = tmp_path_factory.mktemp("runner-venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REPO / "runner" / "requirements.txt"), "-c", str(REPO / "constraints.txt")],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python


@pytest.fixture(scope="module")
def image(runner_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Image:
    root = tmp_path_factory.mktemp("runner-image")
    (root / "tmp").mkdir()
    return Image(root=root, pythonpath=build_file_set(root), python=runner_venv)


def test_the_image_holds_the_runner_and_the_shared_package_only(image: Image):
    assert sorted(p.name for p in image.pythonpath.iterdir()) == ["devex_shared", "runner"]
    core_only = ["devex", "flask", "redis", "rq", "kubernetes", "yaml"]
    probe = f"import importlib.util as u; print([m for m in {core_only!r} if u.find_spec(m)])"
    done = subprocess.run([str(image.python), "-c", probe], cwd=image.root,
                          env=image.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # none of the core's packages can be found


def test_serve_answers_from_the_image(image: Image, tmp_path: Path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "main.py").write_text("print('hi')\n")
    key = access_tokens.repl_key(SECRET, "r1")
    log_path = tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}/r1/"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(image.python), "-m", "runner", "serve", "--workspace", str(workspace),
             "--host", "127.0.0.1", "--port", str(port), "--base-path", "/r1/"],
            cwd=workspace, env=image.env(RUNNER_REPL_ID="r1", RUNNER_KEY=key),
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        def healthy() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                return requests.get(url + "healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(healthy, 30, "the runner from the image file set to answer")
        assert requests.get(url + "api/files", timeout=5).status_code == 401
        token = access_tokens.sign(key, "r1", access_tokens.IDE_SCOPE)
        files = requests.get(url + "api/files", headers={"Authorization": f"Bearer {token}"},
                             timeout=5)
        assert files.status_code == 200, files.text
        assert [f["path"] for f in files.json()["files"]] == ["main.py"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def test_sync_up_and_down_from_the_image_against_s3(
    image: Image, s3_settings: dict[str, str], tmp_path: Path
):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text("print(1)\n")
    (src / "pkg" / "data.bin").write_bytes(b"\x00\x01\x02")

    up = image.run("sync-up", "--src", str(src), "--prefix", "alice/r1/", cwd=tmp_path,
                   **s3_settings)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["uploaded"] == 2
    listed = s3_client(s3_settings["DEVEX_S3_ENDPOINT_URL"]).list_objects_v2(
        Bucket=s3_settings["DEVEX_S3_BUCKET"], Prefix="alice/r1/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "alice/r1/main.py", "alice/r1/pkg/data.bin"]

    dest = tmp_path / "dest"
    down = image.run("sync-down", "--prefix", "alice/r1/", "--dest", str(dest), cwd=tmp_path,
                     **s3_settings)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["downloaded"] == 2
    assert (dest / "main.py").read_text() == "print(1)\n"
    assert (dest / "pkg" / "data.bin").read_bytes() == b"\x00\x01\x02"
