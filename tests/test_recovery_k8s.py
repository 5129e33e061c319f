"""Reconcile over the Kubernetes runtime (the fake API server): a REPL's objects whose
record is gone are quarantined -- a sync-up saves the pod's files under ``_orphans/``,
then every object goes -- and a pod up while its REPL is stopped is stopped, files saved."""

from __future__ import annotations

import pytest

from devex.infra import keys
from devex.models import Status
from devex.services.repls import Actor, ReplService
from jobs import periodic
from tests.support.k8s_env import bound_components, run_jobs

NS = "devex-repls"
ADA = Actor(id="1", login="ada")


@pytest.fixture
def components(fake, tmp_path):
    yield from bound_components(fake, tmp_path, start_timeout=30)


def running_repl(components) -> str:
    repl_id = ReplService(components).create(ADA, "demo", "python").repl.id
    run_jobs(components)
    assert components.store.require(repl_id).status == Status.RUNNING
    return repl_id


def saves_to(components) -> list[str]:
    """The storage prefixes of the sync-up containers injected from now on."""
    prefixes: list[str] = []
    kube = components.runtime.kube
    inject = kube.patch_ephemeral_containers

    def spy(pod_name, containers):
        command = containers[0]["command"]
        prefixes.append(command[command.index("--prefix") + 1])
        return inject(pod_name, containers)

    kube.patch_ephemeral_containers = spy
    return prefixes


def test_objects_of_a_lost_record_are_saved_to_quarantine_then_removed(components, fake):
    repl_id = running_repl(components)
    components.store.delete(components.store.require(repl_id))  # Redis lost it
    prefixes = saves_to(components)

    found = periodic.reconcile()

    assert found["quarantined"] == [repl_id]
    assert len(prefixes) == 1 and prefixes[0].startswith(f"_orphans/{repl_id}/")
    assert all(repl_id not in name for kind in ("deployments", "services", "ingresses",
                                                "networkpolicies", "secrets", "pods")
               for name in fake.names(kind, NS))


def test_a_pod_up_while_its_repl_is_stopped_is_stopped_files_saved(components, fake):
    repl_id = running_repl(components)
    components.redis.hset(keys.repl_meta(repl_id), "status", "stopped")  # record lost a start
    prefixes = saves_to(components)

    assert periodic.reconcile()["stray"] == [repl_id]
    run_jobs(components)

    prefix = components.store.require(repl_id).storage_prefix
    assert prefixes == [prefix]  # saved where the REPL's files belong
    assert fake.names("pods", NS) == [] and fake.names("deployments", NS) == []
    assert components.store.require(repl_id).status == Status.STOPPED
