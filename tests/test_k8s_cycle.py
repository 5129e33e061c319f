"""A REPL's whole life on a cluster that misbehaves, with its pods really running.

``KubernetesRuntime`` on the fake API server with the process kubelet
(``tests/support/process_kubelet.py``): sync-down, the autosave sidecar, the runner and
every ``sync-up`` are local processes against the moto S3 server, reached through
``tests/support/s3_gate.py`` so that an upload can be held mid-way. The cycle: a start
whose runner image is slow to pull (Kubernetes Events in the REPL's progress), an eviction
(the replacement comes up with the saved files; a start beside the evicted pod works), a
stop while autosave's upload is under way (the final save waits for it, then saves the
newest edit), a start again, and a stop while the runner is dead.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from devex.config import KubernetesSettings, Settings
from devex.errors import FilesNotSaved, RuntimeFailure
from devex.infra.runtime.kubernetes import KubernetesRuntime
from devex.models import Repl
from devex.templates_catalog import Catalog
from devex_shared.access_tokens import IDE_SCOPE, repl_key, sign
from tests.support.fake_k8s import FakeKube
from tests.support.ide_client import IdeClient
from tests.support.k8s_helpers import Background, Events, stored
from tests.support.moto_server import REGION, s3_client
from tests.support.process_kubelet import ROOT, ProcessKubelet
from tests.support.s3_gate import S3Gate
from tests.support.waiting import wait_for

NS = "devex-repls"
SECRET = "c" * 40
KINDS = ("deployments", "services", "ingresses", "networkpolicies", "pods")


@pytest.fixture
def gate(moto_server):
    gate = S3Gate(moto_server)
    yield gate
    gate.close()


@pytest.fixture
def kubelet(tmp_path, gate):
    return ProcessKubelet(tmp_path / "node", s3_endpoint=gate.url)


@pytest.fixture
def fake(kubelet):
    with FakeKube(kubelet=kubelet) as kube:
        kube.put("secrets", NS, {"metadata": {"name": "devex-s3"}, "data": {
            "access-key-id": base64.b64encode(b"AKIACYCLE").decode(),
            "secret-access-key": base64.b64encode(b"cycle-secret").decode()}})
        yield kube
        print(kubelet.logs())  # shown when the test failed


@pytest.fixture
def settings(s3_bucket) -> Settings:
    return Settings(
        secret_key=SECRET, runtime="kubernetes", storage="s3", s3_bucket=s3_bucket,
        s3_endpoint_url="http://minio.storage.svc:9000", s3_region=REGION, s3_path_style=True,
        autosave_seconds=1, start_timeout=60, core_url="",
        kubernetes=KubernetesSettings(stop_timeout=60))


@pytest.fixture
def repl() -> Repl:
    return Repl(id="0123456789ab", name="demo", template="python", owner_id="42",
                owner_login="alice", storage_prefix="alice/0123456789ab/")


@pytest.fixture
def template(settings):
    return Catalog.load(settings.templates_dir).get("python")


@pytest.fixture
def s3(moto_server):
    return s3_client(moto_server)


def ide(kubelet, pod: str, repl: Repl, port: int) -> IdeClient:
    token = sign(repl_key(SECRET, repl.id), repl.id, IDE_SCOPE)
    client = IdeClient(f"ws://127.0.0.1:{kubelet.port(pod, port)}/{repl.id}/ws", token)
    client.welcome()
    return client


def autosave_saved(kubelet, pod: str) -> bool:
    """Autosave answers on the pod's loopback and has saved once (it is up and handles
    SIGTERM: before that, a signal would end it like any fresh process)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{kubelet.port(pod, 8081)}/status", timeout=5) as r:
            return json.load(r).get("state") == "saved"
    except urllib.error.URLError:
        return False


def live_pod(fake) -> str:
    """The pod that runs (an evicted one may sit beside it)."""
    live = [n for n in fake.names("pods", NS)
            if fake.get("pods", NS, n)["status"].get("phase") not in ("Failed", "Succeeded")]
    assert len(live) == 1, live
    return live[0]


def ready(fake, name: str) -> bool:
    pod = fake.get("pods", NS, name) or {}
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def test_start_stop_start_through_a_slow_pull_an_eviction_an_upload_and_a_dead_runner(
        fake, kubelet, gate, settings, repl, template, s3, s3_bucket):
    key = f"{repl.storage_prefix}notes.txt"
    s3.put_object(Bucket=s3_bucket, Key=key, Body=b"v0")
    runtime = KubernetesRuntime(settings, api_client=fake.api_client())
    events = Events()

    # 1. A cold pull of the runner's image: the REPL's progress says so while it lasts.
    kubelet.hold_pull(template.image)
    start = Background(runtime.start, repl, template, events)
    wait_for(lambda: f'Pulling image "{template.image}"' in events.of("kubernetes"), 30,
             "the Pulling event in the REPL's progress")
    assert start.thread.is_alive()
    kubelet.release_pull(template.image)
    start.join(90)
    told = [m for _, m in events]
    assert told.index(f'Pulling image "{template.image}"') < told.index("The runner is ready")
    first = live_pod(fake)
    assert any(e["message"].startswith(f'Successfully pulled image "{template.image}" in ')
               for e in fake.events_of(NS, first))  # the kubelet's side of the story
    wait_for(lambda: autosave_saved(kubelet, first), 30, "autosave to be up")

    # 2. The node runs short of memory: the kubelet evicts the pod. Autosave's SIGTERM save
    # keeps the last edit; the replacement loads it.
    with ide(kubelet, first, repl, template.port) as client:
        assert client.call("updateContent", {"path": "notes.txt", "content": "v1"})["success"]
        fake.evict_pod(NS, first, "The node was low on resource: memory. ")
        assert client.wait_closed() in (1001, 1006)
    wait_for(lambda: len(fake.names("pods", NS)) == 2 and ready(fake, live_pod(fake)), 60,
             "the replacement pod to be Ready")
    second = live_pod(fake)
    wait_for(lambda: autosave_saved(kubelet, second), 30, "autosave to be up again")
    assert fake.get("pods", NS, first)["status"]["reason"] == "Evicted"
    assert (kubelet.volume(second, "workspace") / "notes.txt").read_text() == "v1"
    assert runtime.is_running(repl)
    again = Events()
    runtime.start(repl, template, again)  # beside the evicted pod: fine, and quiet about it
    assert again.of("evicted") == [] and "The runner is ready" in again.text()

    # 3. A stop while autosave's upload is under way: the final save waits for it (the
    # lock), then saves the newest edit; the older upload never lands last.
    with ide(kubelet, second, repl, template.port) as client:
        held = gate.hold("PUT", "notes.txt")
        assert client.call("updateContent", {"path": "notes.txt", "content": "v2"})["success"]
        assert held.arrived.wait(30), "autosave's upload of v2 did not start"
        assert client.call("updateContent", {"path": "notes.txt", "content": "v3"})["success"]
        stop = Background(runtime.stop, repl, events)
        assert client.expect("stopping")  # quiesced: no edit after this
        wait_for(lambda: "sync-up-1" in kubelet.processes(second), 30, "sync-up-1 to run")
        assert stop.thread.is_alive() and stored(s3, s3_bucket, key) == b"v1"
        held.release()
        assert held.done.wait(30) and held.status == 200  # v2 landed first ...
        stop.join(90)
    assert stored(s3, s3_bucket, key) == b"v3"  # ... and v3 after it
    assert all(fake.names(kind, NS) == [] for kind in KINDS)  # the evicted pod went too

    # 4. Start again: the files come back. Then the runner dies; the stop still saves.
    kubelet.backoff = 3600  # a crashed runner stays down (CrashLoopBackOff)
    runtime.start(repl, template, events)
    third = live_pod(fake)
    assert (kubelet.volume(third, "workspace") / "notes.txt").read_text() == "v3"
    os.kill(kubelet.processes(third)["runner"].pid, signal.SIGKILL)
    wait_for(lambda: next(c for c in fake.get("pods", NS, third)["status"]["containerStatuses"]
                          if c["name"] == "runner")["restartCount"] == 1, 30, "the crash")
    (kubelet.volume(third, "workspace") / "late.txt").write_text("after the crash")

    runtime.stop(repl, events)

    assert stored(s3, s3_bucket, f"{repl.storage_prefix}late.txt") == b"after the crash"
    assert "saving anyway" in kubelet.log(third, "sync-up-1")  # the dead runner's quiesce
    assert all(fake.names(kind, NS) == [] for kind in KINDS)
    assert kubelet.processes(third) == {}


def test_a_second_stop_waits_for_the_upload_an_earlier_stop_left_running(
        fake, kubelet, gate, settings, repl, template, s3, s3_bucket):
    runtime = KubernetesRuntime(replace(settings, autosave_seconds=3600),
                                api_client=fake.api_client())
    runtime.start(repl, template, Events())
    pod = live_pod(fake)
    wait_for(lambda: autosave_saved(kubelet, pod), 30, "autosave's first save")
    (kubelet.volume(pod, "workspace") / "big.bin").write_bytes(b"x" * 1024)
    held = gate.hold("PUT", "big.bin")  # the final save's upload takes long
    impatient = KubernetesRuntime(replace(settings, kubernetes=KubernetesSettings(stop_timeout=2)),
                                  api_client=fake.api_client())
    with pytest.raises(FilesNotSaved, match="saving did not finish within 2 seconds"):
        impatient.stop(repl, Events())
    assert held.arrived.wait(30)

    events = Events()
    second = Background(runtime.stop, repl, events)
    wait_for(lambda: "(sync-up-1) is still running; waiting for it" in events.text(), 30,
             "the second stop to wait for sync-up-1")
    assert [c["name"] for c in fake.get("pods", NS, pod)["spec"]["ephemeralContainers"]] == \
        ["sync-up-1"]
    held.release()

    second.join(90)
    assert stored(s3, s3_bucket, f"{repl.storage_prefix}big.bin") == b"x" * 1024
    assert fake.count("patch/ephemeralcontainers") == 1  # never two saves at once
    assert all(fake.names(kind, NS) == [] for kind in KINDS)


def test_a_sync_down_that_fails_says_why_in_the_start_failure(fake, kubelet, settings, repl,
                                                              template):
    runtime = KubernetesRuntime(replace(settings, s3_bucket="no-such-bucket", start_timeout=10),
                                api_client=fake.api_client())
    events = Events()

    with pytest.raises(RuntimeFailure) as err:
        runtime.start(repl, template, events)

    why = ("Loading the REPL's files from storage failed: S3 list 'alice/0123456789ab/' "
           "failed: NoSuchBucket")
    assert str(err.value).startswith(why)
    assert any(m.startswith(why) for m in events.of("start"))


@pytest.mark.parametrize("command", [
    ["sync-down", "--prefix", "alice/0123456789ab/", "--dest", "{dir}/down"],
    ["sync-up", "--src", "{dir}", "--prefix", "alice/0123456789ab/"],
    ["autosave", "--src", "{dir}", "--prefix", "alice/0123456789ab/", "--listen",
     "127.0.0.1:0"],
])
def test_every_sync_command_ends_a_failure_with_a_one_line_reason(command, tmp_path,
                                                                  moto_server):
    """What the kubelet keeps of its log (FallbackToLogsOnError) is the reason a person
    reads: the last line must say what failed and why, on its own."""
    (tmp_path / "a.txt").write_text("a")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
           "DEVEX_STORAGE": "s3", "DEVEX_S3_BUCKET": "no-such-bucket",
           "DEVEX_S3_ENDPOINT_URL": moto_server, "DEVEX_S3_REGION": REGION,
           "DEVEX_S3_PATH_STYLE": "true", "DEVEX_S3_ACCESS_KEY_ID": "x",
           "DEVEX_S3_SECRET_ACCESS_KEY": "y"}
    if command[0] == "autosave":  # autosave reports storage errors and retries; it exits
        env.pop("DEVEX_S3_BUCKET")  # only when it cannot work at all
    argv = [a.format(dir=tmp_path) for a in command]
    out = subprocess.run([sys.executable, "-m", "runner", *argv], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)

    assert out.returncode == 1
    last = (out.stdout + out.stderr).strip().splitlines()[-1]
    assert last.startswith(f"runner: {command[0]} failed: "), out.stderr
    assert ("NoSuchBucket" in last) if command[0] != "autosave" else \
        last.endswith("DEVEX_STORAGE=s3 needs DEVEX_S3_BUCKET")
