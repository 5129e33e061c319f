"""A REPL's pod really running, on the fake API server with the process kubelet.

``KubernetesRuntime`` starts the REPL; ``tests/support/process_kubelet.py`` runs its
sync-down, autosave sidecar and runner as local processes against the moto S3 server; the
test edits files through the runner's WebSocket (as the IDE does), sees autosave put them
in storage without any stop, and stops: the sync-up ephemeral container quiesces the
runner, saves under the lock and exits 0, then every object and process is gone.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from devex.config import KubernetesSettings, Settings
from devex.errors import FilesNotSaved
from devex.infra.runtime.kubernetes import KubernetesRuntime
from devex.models import Repl
from devex.templates_catalog import Catalog
from devex_shared.access_tokens import IDE_SCOPE, repl_key, sign
from tests.support.fake_k8s import FakeKube
from tests.support.ide_client import IdeClient
from tests.support.k8s_helpers import Events, stored
from tests.support.moto_server import REGION, s3_client
from tests.support.process_kubelet import ProcessKubelet
from tests.support.waiting import wait_for

NS = "devex-repls"
SECRET = "s" * 40
# What the cluster's S3 Secret holds (moto takes any credentials): values unique enough to
# be looked for in a process's environment.
ACCESS_KEY = "AKIAPROCESSKUBELET01"
SECRET_KEY = "process-kubelet-s3-secret-value"
KINDS = ("deployments", "services", "ingresses", "networkpolicies", "secrets", "pods")


@pytest.fixture
def repl() -> Repl:
    return Repl(id="0123456789ab", name="demo", template="python", owner_id="42",
                owner_login="alice", storage_prefix="alice/0123456789ab/")


@pytest.fixture
def settings(s3_bucket) -> Settings:
    return Settings(
        secret_key=SECRET, runtime="kubernetes", storage="s3", s3_bucket=s3_bucket,
        # an in-cluster name, as in production; the kubelet points it at moto
        s3_endpoint_url="http://minio.storage.svc:9000", s3_region=REGION, s3_path_style=True,
        autosave_seconds=1, start_timeout=60, core_url="",
        kubernetes=KubernetesSettings(stop_timeout=60))


@pytest.fixture
def kubelet(tmp_path, moto_server):
    return ProcessKubelet(tmp_path / "node", s3_endpoint=moto_server)


@pytest.fixture
def fake(kubelet):
    with FakeKube(kubelet=kubelet) as kube:
        kube.put("secrets", NS, {"metadata": {"name": "devex-s3"}, "data": {
            "access-key-id": base64.b64encode(ACCESS_KEY.encode()).decode(),
            "secret-access-key": base64.b64encode(SECRET_KEY.encode()).decode()}})
        yield kube
        print(kubelet.logs())  # shown when the test failed


@pytest.fixture
def template(settings):
    return Catalog.load(settings.templates_dir).get("python")


@pytest.fixture
def s3(moto_server):
    return s3_client(moto_server)


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        pairs = [item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def autosave_status(kubelet, pod: str) -> dict:
    """What the autosave sidecar answers the runner (``GET /status`` on the pod's loopback);
    {} while it is not listening yet (nothing waits for a sidecar without a startup probe)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://127.0.0.1:{kubelet.port(pod, 8081)}/status"
    try:
        with opener.open(url, timeout=5) as resp:
            return json.load(resp)
    except urllib.error.URLError:
        return {}


def ide(kubelet, pod: str, repl: Repl, port: int) -> IdeClient:
    token = sign(repl_key(SECRET, repl.id), repl.id, IDE_SCOPE)
    client = IdeClient(f"ws://127.0.0.1:{kubelet.port(pod, port)}/{repl.id}/ws", token)
    client.welcome()
    return client


def test_autosave_saves_while_running_and_stop_saves_and_removes_everything(
        fake, kubelet, settings, repl, template, s3, s3_bucket):
    s3.put_object(Bucket=s3_bucket, Key=f"{repl.storage_prefix}main.py", Body=b"print(1)\n")
    runtime = KubernetesRuntime(settings, api_client=fake.api_client())
    events = Events()

    runtime.start(repl, template, events)

    pod = fake.names("pods", NS)[0]
    workspace = kubelet.volume(pod, "workspace")
    assert (workspace / "main.py").read_text() == "print(1)\n"  # sync-down ran first
    wait_for(lambda: autosave_status(kubelet, pod).get("state") == "saved", 30,
             "autosave's first save")  # the edits below are then saved by the interval's
    with ide(kubelet, pod, repl, template.port) as client:
        assert client.call("updateContent", {"path": "notes.txt", "content": "draft"}) == {
            "success": True, "path": "notes.txt"}
        assert client.call("delete", {"path": "main.py"})["success"]

        key = f"{repl.storage_prefix}notes.txt"
        wait_for(lambda: stored(s3, s3_bucket, key) == b"draft", 30, "the autosave upload")
        wait_for(lambda: stored(s3, s3_bucket, f"{repl.storage_prefix}main.py") is None, 30,
                 "the autosave deletion")
        assert (kubelet.volume(pod, "devex-state") / "sync.lock").exists()  # sync-up's too
        assert fake.count("patch/ephemeralcontainers") == 0  # no stop was involved

        assert client.call("updateContent", {"path": "notes.txt", "content": "final"})["success"]
        runtime.stop(repl, events)

        assert client.expect("stopping")  # the IDE was told ...
        assert client.wait_closed() == 1001  # ... and let go (who quiesced: the test below)
    assert stored(s3, s3_bucket, key) == b"final"
    assert "Files saved" in events.text()
    assert all(fake.names(kind, NS) == [] for kind in KINDS if kind != "secrets")
    assert fake.names("secrets", NS) == ["devex-s3"]  # the cluster's, not the REPL's
    assert kubelet.processes(pod) == {}  # stop returned once the pod was gone


def test_storage_credentials_live_only_in_the_sync_processes(
        fake, kubelet, settings, repl, template):
    runtime = KubernetesRuntime(replace(settings, autosave_seconds=3600),
                                api_client=fake.api_client())
    runtime.start(repl, template, Events())
    pod = fake.names("pods", NS)[0]
    processes = kubelet.processes(pod)
    assert set(processes) == {"autosave", "runner"}  # sync-down has finished

    runner = environ_of(processes["runner"].pid)
    autosave = environ_of(processes["autosave"].pid)

    assert autosave["DEVEX_S3_ACCESS_KEY_ID"] == ACCESS_KEY
    assert autosave["DEVEX_S3_SECRET_ACCESS_KEY"] == SECRET_KEY
    assert not {k for k in runner if k.startswith(("DEVEX_", "AWS_"))}
    assert not {ACCESS_KEY, SECRET_KEY} & set(runner.values())
    assert runner["RUNNER_AUTOSAVE_URL"] == f"http://127.0.0.1:{kubelet.port(pod, 8081)}/"
    runtime.stop(repl, Events(), save=False)


def test_stop_saves_what_autosave_has_not_yet(fake, kubelet, settings, repl, template, s3,
                                              s3_bucket):
    runtime = KubernetesRuntime(replace(settings, autosave_seconds=3600),
                                api_client=fake.api_client())
    events = Events()
    runtime.start(repl, template, events)
    pod = fake.names("pods", NS)[0]
    # autosave saves once when it starts; the next save would be an hour later
    wait_for(lambda: autosave_status(kubelet, pod).get("state") == "saved", 30,
             "autosave's first save")
    with ide(kubelet, pod, repl, template.port) as client:
        assert client.call("updateContent", {"path": "late.txt", "content": "late"})["success"]
        assert stored(s3, s3_bucket, f"{repl.storage_prefix}late.txt") is None  # not yet

        runtime.stop(repl, events)

        assert client.wait_closed() == 1001
    assert stored(s3, s3_bucket, f"{repl.storage_prefix}late.txt") == b"late"
    assert '"uploaded": 1' in kubelet.log(pod, "sync-up-1")  # the final save did it


def test_stop_saves_while_the_runner_is_down(fake, kubelet, settings, repl, template, s3,
                                             s3_bucket):
    """A crashed runner neither blocks the save (no target container) nor fails it (its
    quiesce is refused, logged, and the save goes on)."""
    kubelet.backoff = 3600  # a crashed runner stays down (CrashLoopBackOff)
    runtime = KubernetesRuntime(replace(settings, autosave_seconds=3600),
                                api_client=fake.api_client())
    events = Events()
    runtime.start(repl, template, events)
    pod = fake.names("pods", NS)[0]
    os.kill(kubelet.processes(pod)["runner"].pid, signal.SIGKILL)

    def runner_down() -> bool:
        status = fake.get("pods", NS, pod)["status"]
        runner = next(c for c in status["containerStatuses"] if c["name"] == "runner")
        return runner["restartCount"] == 1 and "waiting" in runner["state"]

    wait_for(runner_down, 30, "the runner to be in CrashLoopBackOff")
    (kubelet.volume(pod, "workspace") / "kept.txt").write_text("written before the crash")

    runtime.stop(repl, events)

    assert "saving anyway" in kubelet.log(pod, "sync-up-1")
    assert stored(s3, s3_bucket, f"{repl.storage_prefix}kept.txt") == \
        b"written before the crash"
    assert "Files saved" in events.text()


def test_the_final_save_quiesces_the_runner_before_saving(fake, kubelet, settings, repl,
                                                          template, s3, s3_bucket):
    """The stop's sync-up stops edits first, with its control token (a pod deletion would
    quiesce the runner too, so this looks at a save that fails: the pod stays)."""
    runtime = KubernetesRuntime(replace(settings, autosave_seconds=3600),
                                api_client=fake.api_client())
    runtime.start(repl, template, Events())
    pod = fake.names("pods", NS)[0]
    wait_for(lambda: autosave_status(kubelet, pod).get("state") == "saved", 30,
             "autosave's first save")
    for obj in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []):
        s3.delete_object(Bucket=s3_bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=s3_bucket)  # the save will fail: nothing is deleted
    with ide(kubelet, pod, repl, template.port) as client:
        with pytest.raises(FilesNotSaved) as err:
            runtime.stop(repl, Events())

        assert client.expect("stopping")
        assert client.wait_closed() == 1001
    assert "NoSuchBucket" in str(err.value)  # the end of sync-up's log, as the kubelet keeps it
    assert "runner" in kubelet.processes(pod)  # closed by the quiesce, not by a shutdown
    assert fake.names("pods", NS) == [pod]
    runtime.stop(repl, Events(), save=False)
