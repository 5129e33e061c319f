"""Kubernetes API calls per runtime step, counted (not timed) against the tests' fake API
server: the official client over real HTTP; pods there are Ready at once, so a start needs
no watch. What each count is made of: docs/KUBERNETES.md."""

from __future__ import annotations

import json
from collections.abc import Callable

from devex.config import Settings
from devex.infra.runtime.kubernetes import KubernetesRuntime
from devex.models import Repl
from devex.templates_catalog import Catalog
from tests.support.fake_k8s import FakeKube


def run() -> dict:
    settings = Settings.from_env({
        "DEVEX_SECRET_KEY": "s" * 40, "DEVEX_RUNTIME": "kubernetes", "DEVEX_AUTH": "local",
        "DEVEX_STORAGE": "s3", "DEVEX_S3_BUCKET": "repls", "DEVEX_START_TIMEOUT": "5",
        "DEVEX_K8S_STOP_TIMEOUT": "5", "DEVEX_CORE_URL": "http://devex-web.devex:8000",
    })
    template = Catalog.load(settings.templates_dir).get("python")
    repl = Repl(id="0123456789ab", name="bench", template="python", owner_id="42",
                owner_login="alice", storage_prefix="alice/0123456789ab/")

    def events(kind: str, message: str) -> None:
        pass

    counts: dict[str, int] = {}
    with FakeKube() as fake:
        runtime = KubernetesRuntime(settings, api_client=fake.api_client())

        def step(name: str, action: Callable[[], object]) -> None:
            fake.reset_log()
            action()
            counts[name] = fake.count()

        step("start (fresh)", lambda: runtime.start(repl, template, events))
        step("start (already running)", lambda: runtime.start(repl, template, events))
        step("stop (save, exit 0)", lambda: runtime.stop(repl, events))
        runtime.start(repl, template, events)
        step("stop (force)", lambda: runtime.stop(repl, events, save=False))
        step("stop (already gone)", lambda: runtime.stop(repl, events))
    return {"kubernetes_api_calls": counts}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
