"""Smoke test of the real kube-apiserver 1.20 harness with the official Python client and kubectl.

Needs root and the binary built by ``scripts/kube-apiserver.sh`` (or ``FLOWLENS_KUBE_APISERVER``); skips otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.k8s.apiserver import INSTANCE_TYPE, ZONE, ApiServer, apiserver_for_tests


@pytest.fixture(scope="module")
def apiserver() -> Iterator[ApiServer]:
    with apiserver_for_tests() as server:
        yield server


@pytest.fixture
def api(apiserver: ApiServer) -> Iterator[client.ApiClient]:
    with client.ApiClient(apiserver.client_configuration()) as api_client:
        yield api_client


def _status(call: object, *args: object, **kwargs: object) -> int:
    """HTTP status of a client call that is expected to fail."""
    assert callable(call)
    with pytest.raises(ApiException) as e:
        call(*args, **kwargs)
    return int(e.value.status)


def test_pods_nodes_and_endpointslices(apiserver: ApiServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    ns = f"smoke-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

    node = client.V1Node(metadata=client.V1ObjectMeta(
        name=f"node-{ns}", labels={ZONE: "us-east-1a", INSTANCE_TYPE: "g5.2xlarge"}))
    core.create_node(node)
    nodes = core.list_node(label_selector=f"{ZONE}=us-east-1a").items
    assert [n.metadata.labels[INSTANCE_TYPE] for n in nodes] == ["g5.2xlarge"]

    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="infer-0", labels={"app": "infer"}),
        spec=client.V1PodSpec(node_name=f"node-{ns}", containers=[client.V1Container(name="c", image="busybox")]),
    )
    core.create_namespaced_pod(ns, pod)
    # No kubelet: the test plays its part and sets the pod IP.
    core.patch_namespaced_pod_status("infer-0", ns, {"status": {"podIP": "10.244.1.7", "phase": "Running"}})
    pods = core.list_namespaced_pod(ns, label_selector="app=infer").items
    assert [(p.metadata.name, p.status.pod_ip, p.spec.node_name) for p in pods] == [
        ("infer-0", "10.244.1.7", f"node-{ns}")]

    # EndpointSlice: 1.20 serves discovery.k8s.io/v1beta1 only (no controller-manager: the test writes the slice).
    groups = {g.name: [v.version for v in g.versions] for g in client.ApisApi(api).get_api_versions().groups}
    assert groups["discovery.k8s.io"] == ["v1beta1"]
    custom = client.CustomObjectsApi(api)
    eps = {
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSlice",
        "metadata": {"name": "infer-abc", "labels": {"kubernetes.io/service-name": "infer"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.7"], "conditions": {"ready": True},
                       "topology": {ZONE: "us-east-1a", "kubernetes.io/hostname": f"node-{ns}"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    custom.create_namespaced_custom_object("discovery.k8s.io", "v1beta1", ns, "endpointslices", eps)
    listed = custom.list_namespaced_custom_object("discovery.k8s.io", "v1beta1", ns, "endpointslices")
    assert isinstance(listed, dict)
    assert [(s["endpoints"][0]["addresses"], s["endpoints"][0]["topology"][ZONE]) for s in listed["items"]] == [
        (["10.244.1.7"], "us-east-1a")]
    assert _status(client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces) == 404
    assert apiserver.get("/apis/discovery.k8s.io/v1/endpointslices")[0] == 404


def test_kubeconfig_for_client_and_kubectl(apiserver: ApiServer, tmp_path: Path) -> None:
    path = apiserver.kubeconfig(tmp_path / "kubeconfig")
    conf = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=conf)
    with client.ApiClient(conf) as api_client:
        assert "default" in [n.metadata.name for n in client.CoreV1Api(api_client).list_namespace().items]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    out = subprocess.run([kubectl, "--kubeconfig", str(path), "version", "-o", "json"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert json.loads(out.stdout)["serverVersion"]["gitVersion"] == "v1.20.2", out.stderr
    out = subprocess.run([kubectl, "--kubeconfig", str(path), "get", "namespace", "default", "-o", "name"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "namespace/default"


def test_restart_keeps_objects_and_add_token(apiserver: ApiServer) -> None:
    core_admin = client.CoreV1Api(client.ApiClient(apiserver.client_configuration()))
    core_admin.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="survives-restart")))
    viewer_token = uuid.uuid4().hex
    viewer = client.CoreV1Api(client.ApiClient(apiserver.client_configuration(viewer_token)))
    assert _status(viewer.list_namespace) == 401  # unknown token

    # The token file is read at start only: write the new token, then restart the apiserver (etcd keeps running).
    apiserver.add_token(viewer_token, "viewer", ["flowlens:viewers"], restart=False)
    old_pid = apiserver.pid
    apiserver.restart()
    assert apiserver.pid != old_pid
    assert apiserver.get("/readyz") == (200, b"ok")
    assert core_admin.read_namespace("survives-restart").metadata.name == "survives-restart"  # etcd kept it
    assert _status(viewer.list_namespace) == 403  # authenticated now; RBAC grants nothing yet

    # Not the built-in "view": it is an aggregated ClusterRole whose rules kube-controller-manager fills in,
    # and there is no controller-manager here, so it grants nothing.
    rbac = client.RbacAuthorizationV1Api(client.ApiClient(apiserver.client_configuration()))
    rbac.create_cluster_role(client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name="pod-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list", "watch"])],
    ))
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name="viewers"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="pod-reader"),
        subjects=[client.RbacV1Subject(kind="Group", name="flowlens:viewers", api_group="rbac.authorization.k8s.io")],
    ))
    deadline = time.monotonic() + 10  # the RBAC authorizer sees new bindings through an informer: a short lag
    while True:
        try:
            assert viewer.list_namespaced_pod("default").items == []
            break
        except ApiException as e:
            if e.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
