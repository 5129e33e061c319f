"""A kubelet for ``FakeKube`` that really runs a pod's containers as local processes.

``FakeKube(kubelet=ProcessKubelet(root, s3_endpoint=...))``. When a pod is scheduled:

- every ``emptyDir`` volume is a directory ``root/<pod>/volumes/<volume>``; in a container's
  command, ``workingDir`` and env values a mount path (``/workspace``, ``/tmp``,
  ``/devex-state``) is rewritten to its volume's directory;
- the pod's network namespace is this machine's loopback: ``--host 0.0.0.0`` becomes
  ``127.0.0.1`` and every port the pod uses (``--port N``, ``127.0.0.1:N``, ``localhost:N``)
  is mapped, consistently within the pod, to a free local port (``port()``: port-forward);
- env comes from ``value`` and ``secretKeyRef`` (Secrets stored in the fake; a missing one
  is ``CreateContainerConfigError``, retried like the kubelet does) on top of the image's
  (``PATH``, ``PYTHONPATH`` = this repository as the image's ``/opt/devex``); with
  ``s3_endpoint`` set, ``DEVEX_S3_ENDPOINT_URL`` points there (the cluster's storage, e.g.
  the tests' moto server); ``python`` is this interpreter;
- init containers run one after another until each exits 0 (restarted with back-off
  otherwise); a native sidecar (``restartPolicy: Always``) is started and kept running;
  then the containers; any that exits is restarted with back-off (``CrashLoopBackOff`` in
  between, ``restartCount``, ``lastState``);
- a container is Ready when its ``readinessProbe`` (HTTP GET) answers 2xx, polled every
  ``probe_interval`` seconds; the pod is Ready when all are;
- an ephemeral container runs its command once; its real exit code becomes its
  ``terminated`` state (with ``FallbackToLogsOnError`` the end of its log is the message);
- deleting the pod SIGTERMs the containers (and ephemeral ones), then the sidecars in
  reverse order, SIGKILLs what is left at the grace period's end, then removes the pod;
  an eviction (``FakeKube.evict_pod``) stops them the same way, then leaves the pod
  ``Failed``/``Evicted`` for the fake to replace;
- the Events a kubelet records: Scheduled (for the scheduler), Pulled ("already present",
  or after a pull), Pulling, Created, Started, BackOff, Killing; ``hold_pull(image)`` makes
  pulling that image slow until ``release_pull(image)`` (the container waits in
  ``ContainerCreating`` meanwhile, as during a cold pull).

Each process runs in its own session (its group is the "container": what is left of it is
killed when its main process ends). Output goes to ``root/<pod>/logs/<container>.log``.

Not modelled: images (every container runs this checkout), resources and limits, security
contexts (all run as the test's user), separate network or PID namespaces, startup and
liveness probes, volume types other than emptyDir, ``subPath``.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
_LOOPBACK = re.compile(r"\b(?:127\.0\.0\.1|localhost|0\.0\.0\.0):(\d+)\b")
LOG_TAIL_LINES, LOG_TAIL_BYTES = 80, 2048  # what the kubelet keeps of a log as message


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")




class ConfigError(Exception):
    """The container cannot be created (the kubelet's CreateContainerConfigError)."""


@dataclass
class Container:
    spec: dict
    kind: str  # "init", "sidecar", "main", "ephemeral"
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "PodInitializing"}})
    last: dict = field(default_factory=dict)
    restarts: int = 0
    ready: bool = False
    proc: subprocess.Popen | None = None
    started: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return self.spec["name"]

    def status(self) -> dict:
        out = {"name": self.name, "image": self.spec.get("image", ""), "imageID": "",
               "ready": self.ready, "restartCount": self.restarts, "state": dict(self.state),
               "started": "running" in self.state}
        if self.proc is not None:
            out["containerID"] = f"process://{self.proc.pid}"
        if self.last:
            out["lastState"] = dict(self.last)
        return out


@dataclass
class PodRun:
    namespace: str
    name: str
    spec: dict
    root: Path
    containers: dict[str, Container] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)
    initialized: bool = False
    terminating: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def of(self, kind: str) -> list[Container]:
        return [c for c in self.containers.values() if c.kind == kind]


class ProcessKubelet:
    def __init__(self, root: Path, *, s3_endpoint: str = "", probe_interval: float = 0.1,
                 backoff: float = 0.5, max_backoff: float = 5.0):
        self.root = Path(root)
        self.s3_endpoint = s3_endpoint
        self.probe_interval = probe_interval
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.fake = None
        self._pods: dict[str, PodRun] = {}
        self._held: dict[str, threading.Event] = {}  # image -> released

    def attach(self, fake) -> None:
        self.fake = fake

    @property
    def _lock(self):
        return self.fake._cond  # one lock for the API objects and the kubelet's state

    # -- for tests -------------------------------------------------------------------------
    def volume(self, pod: str, volume: str) -> Path:
        return self._pods[pod].root / "volumes" / volume

    def port(self, pod: str, container_port: int) -> int:
        """The local port standing for the pod's ``container_port``."""
        with self._lock:
            return self._port(self._pods[pod], container_port)

    def log(self, pod: str, container: str) -> str:
        path = self._pods[pod].root / "logs" / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """Every container's log (for a failing test's report)."""
        out = []
        for run in list(self._pods.values()):
            for path in sorted((run.root / "logs").glob("*.log")):
                out.append(f"--- {run.name}/{path.stem}\n{path.read_text(errors='replace')}")
        return "\n".join(out)

    def processes(self, pod: str) -> dict[str, subprocess.Popen]:
        """The live process of each container of the pod."""
        with self._lock:
            return {c.name: c.proc for c in self._pods[pod].containers.values()
                    if c.proc is not None and c.proc.poll() is None}

    def hold_pull(self, image: str) -> None:
        """Pulling ``image`` takes until ``release_pull`` (a cold pull of a big image)."""
        self._held[image] = threading.Event()

    def release_pull(self, image: str) -> None:
        self._held[image].set()

    def _event(self, run: PodRun, type_: str, reason: str, message: str,
               container: str = "", source: str = "kubelet") -> None:
        with self._lock:
            pod = self.fake.objects.get(("pods", run.namespace, run.name))
            if pod is not None:
                self.fake._event(run.namespace, pod, type_, reason, message, container, source)

    # -- hooks (called by FakeKube with its lock held) --------------------------------------
    def runs(self, pod: str) -> bool:
        return pod in self._pods

    def pod_created(self, namespace: str, pod: dict) -> None:
        name = pod["metadata"]["name"]
        run = PodRun(namespace, name, pod["spec"], self.root / name)
        for spec in pod["spec"].get("initContainers") or []:
            kind = "sidecar" if spec.get("restartPolicy") == "Always" else "init"
            run.containers[spec["name"]] = Container(spec, kind)
        for spec in pod["spec"].get("containers") or []:
            run.containers[spec["name"]] = Container(spec, "main")
        for vol in pod["spec"].get("volumes") or []:
            if "emptyDir" not in vol:
                raise NotImplementedError(f"volume {vol['name']}: only emptyDir is modelled")
            (run.root / "volumes" / vol["name"]).mkdir(parents=True)
        (run.root / "logs").mkdir(parents=True, exist_ok=True)
        self._pods[name] = run
        self._publish(run)
        self.fake._event(namespace, pod, "Normal", "Scheduled",
                         f"Successfully assigned {namespace}/{name} to node-1",
                         source="default-scheduler")
        self._thread(run, self._run_pod, run)

    def pod_deleted(self, namespace: str, name: str, grace: float) -> None:
        run = self._pods.get(name)
        if run is None or run.terminating:
            return
        run.terminating = True
        run.stopped.set()
        threading.Thread(target=self._shut_down, args=(run, grace), daemon=True).start()

    def pod_evicted(self, namespace: str, name: str, grace: float, message: str) -> None:
        """Stop the pod's processes like a deletion; then it stays, Failed."""
        run = self._pods.get(name)
        if run is None or run.terminating:
            return
        run.terminating = True
        run.stopped.set()

        def done() -> None:
            with self._lock:
                self.fake._evicted(namespace, name, message)

        threading.Thread(target=self._shut_down, args=(run, grace, done), daemon=True).start()

    def ephemeral_added(self, namespace: str, name: str, spec: dict) -> None:
        run = self._pods[name]
        c = run.containers[spec["name"]] = Container(spec, "ephemeral")
        c.state = {"waiting": {"reason": "ContainerCreating"}}
        self._publish(run)
        self._thread(run, self._run_ephemeral, run, c)

    def close(self) -> None:
        """Kill every process still running (a failing test must not leak them)."""
        for run in list(self._pods.values()):
            run.terminating = True
            run.stopped.set()
            for c in list(run.containers.values()):
                if c.proc is not None and c.proc.poll() is None:
                    _kill_group(c.proc, signal.SIGKILL)
                    c.proc.wait()
            for t in run.threads:
                t.join(timeout=5)

    # -- the pod's life ----------------------------------------------------------------------
    def _thread(self, run: PodRun, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        run.threads.append(t)
        t.start()

    def _run_pod(self, run: PodRun) -> None:
        for c in list(run.containers.values()):
            if c.kind == "init":
                if not self._supervise(run, c):
                    return  # deleted while initialising
            elif c.kind == "sidecar":  # the next one starts once the sidecar has started
                self._thread(run, self._supervise, run, c)
                while not c.started.wait(self.probe_interval):
                    if run.stopped.is_set():
                        return
        with self._lock:
            run.initialized = True
            self._publish(run)
        for c in run.of("main"):
            self._thread(run, self._supervise, run, c)
        while not run.stopped.wait(self.probe_interval):
            changed = False
            for c in run.of("main"):
                ready = "running" in c.state and self._probe(run, c)
                if ready != c.ready:
                    with self._lock:
                        c.ready = ready
                    changed = True
            if changed:
                with self._lock:
                    self._publish(run)

    def _supervise(self, run: PodRun, c: Container) -> bool:
        """Run ``c`` under the pod's restart policy (Always; an init container until it
        exits 0). True when an init container completed."""
        delay = self.backoff
        while not run.stopped.is_set():
            code = self._run_once(run, c)
            if code == 0 and c.kind == "init":
                return True
            if run.stopped.is_set():
                return False
            if code is not None:  # it ran and ended: back-off before the restart
                with self._lock:
                    c.last, c.restarts = c.state, c.restarts + 1
                    c.state = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                           f"back-off restarting failed container {c.name}"}}
                    self._publish(run)
                self._event(run, "Warning", "BackOff", f"Back-off restarting failed container "
                            f"{c.name} in pod {run.name}_{run.namespace}", c.name)
            # else the reason it could not be created stays, and creating it is retried
            run.stopped.wait(delay)
            delay = min(delay * 2, self.max_backoff)
        return False

    def _pull(self, run: PodRun, c: Container) -> bool:
        """The image is there (at once, or after a held pull); False if the pod stopped."""
        image = c.spec.get("image", "")
        held = self._held.get(image)
        if held is None or held.is_set():
            self._event(run, "Normal", "Pulled",
                        f'Container image "{image}" already present on machine', c.name)
            return True
        with self._lock:
            c.state = {"waiting": {"reason": "ContainerCreating"}}
            self._publish(run)
        self._event(run, "Normal", "Pulling", f'Pulling image "{image}"', c.name)
        started = time.monotonic()
        while not held.wait(self.probe_interval):
            if run.stopped.is_set():
                return False
        took = time.monotonic() - started
        self._event(run, "Normal", "Pulled", f'Successfully pulled image "{image}" in '
                    f"{took:.1f}s ({took:.1f}s including waiting)", c.name)
        return True

    def _run_once(self, run: PodRun, c: Container) -> int | None:
        """Start ``c``, wait for it; its exit code (None: it could not be created)."""
        if not self._pull(run, c):
            return None
        try:
            argv, cwd, env = self._prepare(run, c)
        except ConfigError as exc:
            with self._lock:
                c.state = {"waiting": {"reason": "CreateContainerConfigError",
                                       "message": str(exc)}}
                self._publish(run)
            return None
        with self._lock:
            if run.stopped.is_set():
                return None
            log = (run.root / "logs" / f"{c.name}.log").open("ab")
            try:
                c.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
            except OSError as exc:
                c.state = {"waiting": {"reason": "RunContainerError", "message": str(exc)}}
                self._publish(run)
                return None
            finally:
                log.close()
            started = _now()
            c.state = {"running": {"startedAt": started}}
            c.started.set()
            c.ready = c.kind == "sidecar"  # no readiness probe: ready once started
            self._publish(run)
        self._event(run, "Normal", "Created", f"Created container: {c.name}", c.name)
        self._event(run, "Normal", "Started", f"Started container {c.name}", c.name)
        code = c.proc.wait()
        _kill_group(c.proc, signal.SIGKILL)  # the container ends with its main process
        with self._lock:
            c.ready = False
            c.state = {"terminated": {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": started, "finishedAt": _now(),
                **self._message(run, c, code)}}
            self._publish(run)
        return code

    def _run_ephemeral(self, run: PodRun, c: Container) -> None:
        self._run_once(run, c)  # never restarted (nor retried when it cannot be created)

    def _message(self, run: PodRun, c: Container, code: int) -> dict:
        if code == 0 or c.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return {}
        text = self.log(run.name, c.name)
        tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])[-LOG_TAIL_BYTES:]
        return {"message": tail} if tail else {}

    def _shut_down(self, run: PodRun, grace: float, then=None) -> None:
        deadline = time.monotonic() + grace
        first = run.of("init") + run.of("main") + run.of("ephemeral")
        for group in (first, *[[c] for c in reversed(run.of("sidecar"))]):
            for c in group:
                if c.proc is not None and c.proc.poll() is None:
                    self._event(run, "Normal", "Killing", f"Stopping container {c.name}",
                                c.name)
                    c.proc.send_signal(signal.SIGTERM)
            for c in group:
                if c.proc is None:
                    continue
                try:
                    c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _kill_group(c.proc, signal.SIGKILL)
                    c.proc.wait()
        for t in run.threads:
            t.join(timeout=5)
        if then is not None:
            then()
            return
        self.fake.remove_pod(run.namespace, run.name)

    # -- turning a container spec into a process ---------------------------------------------
    def _prepare(self, run: PodRun, c: Container) -> tuple[list[str], str, dict[str, str]]:
        mounts = {m["mountPath"].rstrip("/") or "/": run.root / "volumes" / m["name"]
                  for m in c.spec.get("volumeMounts") or []}
        with self._lock:
            def local(value: str) -> str:
                return self._ports_in(run, _paths_in(value, mounts))

            argv = [local(a) for a in (c.spec.get("command") or []) + (c.spec.get("args") or [])]
            for i, arg in enumerate(argv[:-1]):
                if arg == "--host" and argv[i + 1] == "0.0.0.0":
                    argv[i + 1] = "127.0.0.1"
                if arg == "--port" and argv[i + 1].isdigit():
                    argv[i + 1] = str(self._port(run, int(argv[i + 1])))
            if argv and argv[0] in ("python", "python3"):
                argv[0] = sys.executable
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
                   "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(run.root),
                   "LANG": "C.UTF-8"}
            for item in c.spec.get("env") or []:
                env[item["name"]] = local(self._env_value(run, item))
            if self.s3_endpoint and "DEVEX_S3_ENDPOINT_URL" in env:
                env["DEVEX_S3_ENDPOINT_URL"] = self.s3_endpoint
            cwd = _paths_in(c.spec.get("workingDir") or "", mounts) or str(run.root)
        if not argv:
            raise ConfigError("no command: images are not modelled")
        return argv, cwd, env

    def _env_value(self, run: PodRun, item: dict) -> str:
        if "value" in item:
            return str(item["value"])
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            raise ConfigError(f"env {item['name']}: only value and secretKeyRef are modelled")
        secret = self.fake.objects.get(("secrets", run.namespace, ref["name"]))
        if secret is None:
            raise ConfigError(f'secret "{ref["name"]}" not found')
        data = secret.get("data") or {}
        if ref["key"] not in data:
            raise ConfigError(f"couldn't find key {ref['key']} in Secret "
                              f"{run.namespace}/{ref['name']}")
        return base64.b64decode(data[ref["key"]]).decode()

    def _port(self, run: PodRun, port: int) -> int:
        if port not in run.ports:
            run.ports[port] = free_port()
        return run.ports[port]

    def _ports_in(self, run: PodRun, value: str) -> str:
        return _LOOPBACK.sub(lambda m: f"127.0.0.1:{self._port(run, int(m.group(1)))}", value)

    def _probe(self, run: PodRun, c: Container) -> bool:
        get = (c.spec.get("readinessProbe") or {}).get("httpGet")
        if get is None:
            return True
        port = get["port"]
        if isinstance(port, str):  # a named port
            port = next(p["containerPort"] for p in c.spec.get("ports") or []
                        if p.get("name") == port)
        with self._lock:
            local = self._port(run, int(port))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{local}{get.get('path', '/')}", timeout=1) as r:
                return 200 <= r.status < 400
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    # -- status ------------------------------------------------------------------------------
    def _publish(self, run: PodRun) -> None:
        """Write the pod's status from the containers' states (lock held)."""
        pod = self.fake.objects.get(("pods", run.namespace, run.name))
        if pod is None or pod["status"].get("phase") in ("Failed", "Succeeded"):
            return  # gone, or evicted: a finished pod's status is final
        main = run.of("main")
        started = run.initialized and all("running" in c.state or c.restarts for c in main)
        ready = run.initialized and all(c.ready for c in main) and not run.terminating

        def cond(ok: bool) -> str:
            return "True" if ok else "False"

        status = {
            "phase": "Running" if started else "Pending",
            "conditions": pod["status"].get("conditions") or [],
            "initContainerStatuses": [c.status() for c in run.containers.values()
                                      if c.kind in ("init", "sidecar")],
            "containerStatuses": [c.status() for c in main],
        }
        ephemeral = run.of("ephemeral")
        known = {c.name for c in ephemeral}
        # statuses the API server wrote itself (a refused target) stay as they are
        kept = [s for s in pod["status"].get("ephemeralContainerStatuses") or []
                if s["name"] not in known]
        if ephemeral or kept:
            status["ephemeralContainerStatuses"] = kept + [c.status() for c in ephemeral]
        pod["status"] = status
        self.fake._set_conditions(pod, {"PodScheduled": "True",
                                        "Initialized": cond(run.initialized),
                                        "ContainersReady": cond(ready), "Ready": cond(ready)})
        self.fake._emit("MODIFIED", "pods", pod)


def _paths_in(value: str, mounts: dict[str, Path]) -> str:
    """``value`` with a leading mount path replaced by its volume's directory."""
    for path in sorted(mounts, key=len, reverse=True):
        if value == path or value.startswith(path + "/"):
            return str(mounts[path]) + value[len(path):]
    return value


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # its own session: the group id is its pid
    except (ProcessLookupError, PermissionError):
        pass
