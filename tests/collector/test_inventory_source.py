"""The Kubernetes source against a real kube-apiserver 1.20: lists, then watch events, each updating
only what its object touches in the inventory.

Needs root and the binary built by ``scripts/kube-apiserver.sh`` (or ``FLOWLENS_KUBE_APISERVER``); skips
otherwise. 1.20 serves EndpointSlices as v1beta1 only, so the source's EndpointSlice watch fails there
(and retries): this test leaves slices out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowlens.collector.enrich.inventory import AddressOwner, Inventory
from tests.k8s.apiserver import INSTANCE_TYPE, ZONE, ApiServer, apiserver_for_tests


@pytest.fixture(scope="module")
def apiserver() -> Iterator[ApiServer]:
    with apiserver_for_tests() as server:
        yield server
        server.stop(grace_s=0)  # the source's watches stay open until then: no use waiting for them


def eventually(what: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert what()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_the_source_follows_lists_and_watch_events(apiserver: ApiServer, tmp_path: Path) -> None:
    from kubernetes import client

    from flowlens.collector.inventory_sources import KubernetesSource

    api = client.ApiClient(apiserver.client_configuration())
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = f"inv-{uuid.uuid4().hex[:6]}"
    node = f"node-{ns}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
        name=node, labels={ZONE: "us-east-1a", INSTANCE_TYPE: "g5.2xlarge"})))
    core.patch_node_status(node, {"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}})
    template = client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": "web"}),
                                        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]))
    rs = apps.create_namespaced_replica_set(ns, client.V1ReplicaSet(
        metadata=client.V1ObjectMeta(name="web-7d9f8c6b5", owner_references=[client.V1OwnerReference(
            api_version="apps/v1", kind="Deployment", name="shop", uid=str(uuid.uuid4()), controller=True)]),
        spec=client.V1ReplicaSetSpec(selector=client.V1LabelSelector(match_labels={"app": "web"}),
                                     template=template)))

    def start_pod(name: str, owner: str, owner_uid: str, ip: str) -> None:
        core.create_namespaced_pod(ns, client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels={"app": "web"}, owner_references=[client.V1OwnerReference(
                api_version="apps/v1", kind="ReplicaSet", name=owner, uid=owner_uid, controller=True)]),
            spec=client.V1PodSpec(node_name=node, containers=[client.V1Container(name="c", image="x")])))
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        core.patch_namespaced_pod_status(name, ns, {"status": {"podIP": ip, "phase": "Running",
                                                               "startTime": started}})

    start_pod("web-7d9f8c6b5-abcde", "web-7d9f8c6b5", rs.metadata.uid, "10.244.1.7")
    core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="web", annotations={"service.kubernetes.io/topology-mode": "Auto"}),
        spec=client.V1ServiceSpec(cluster_ip="10.96.5.5", ports=[client.V1ServicePort(port=80)])))

    inventory = Inventory()
    source = KubernetesSource(inventory, str(apiserver.kubeconfig(tmp_path / "kubeconfig")))

    def pod(ip: str = "10.244.1.7", later: float = 0.0) -> AddressOwner | None:
        with inventory.lock:
            return inventory.endpoint(ip, None, time.time() + later)

    source.start()
    try:
        # The lists: the pod's workload through its ReplicaSet, its node's zone; the Service; the node.
        eventually(lambda: pod() is not None and (pod().workload, pod().zone) == ("shop", "us-east-1a"))
        eventually(lambda: inventory.services.get("10.96.5.5") == AddressOwner("service", "web", ns, service="web"))
        assert (ns, "web") in inventory.topology_aware
        assert inventory.node_by_ip["192.0.2.11"] == node
        assert inventory.nodes[node].instance_type == "g5.2xlarge"
        # Watch events: the node changes zone, and its pod with it.
        core.patch_node(node, {"metadata": {"labels": {ZONE: "us-east-1b"}}})
        eventually(lambda: pod().zone == "us-east-1b")
        # The ReplicaSet goes before its pod: the workload falls back to its name.
        apps.delete_namespaced_replica_set("web-7d9f8c6b5", ns)
        eventually(lambda: (pod().workload, pod().workload_kind) == ("web", "Deployment"))
        # The pod goes; a new one gets its address.
        version = inventory.version
        core.delete_namespaced_pod("web-7d9f8c6b5-abcde", ns, grace_period_seconds=0)
        eventually(lambda: pod(later=2) is None)
        assert inventory.version - version <= 2  # its delete (and the status change before it, if any)
        start_pod("api-5c4d3b2a1-zzzzz", "api-5c4d3b2a1", str(uuid.uuid4()), "10.244.1.7")
        eventually(lambda: pod(later=2) is not None and pod(later=2).name == "api-5c4d3b2a1-zzzzz")
        assert pod(later=2).workload == "api"
        core.delete_namespaced_service("web", ns, _preload_content=False)  # 1.20 answers a Status
        eventually(lambda: "10.96.5.5" not in inventory.services and (ns, "web") not in inventory.topology_aware)
    finally:
        source.stop()
        api.close()
