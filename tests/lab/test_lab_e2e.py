"""The whole lab with the real workload: scale-out from zero under load, model loads over the
node's shaped uplink, outputs and notifications, scale-in after the cooldown, node-type swap."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from flowlens_lab import aws_side, lab, network, teardown
from flowlens_lab import state as lab_state
from flowlens_lab.demo import wait_for
from flowlens_lab.loadgen import send
from flowlens_lab.shell import in_ns
from flowlens_lab.spec import LabSpec

MODEL_LINE = re.compile(r"Model loaded in (?P<total>[\d.]+)s \(load weights from disk: (?P<weights>[\d.]+)s, "
                        r"create model: [\d.]+s, apply weights to model: [\d.]+s, apply half\(\): [\d.]+s, "
                        r"calculate empty prompt: [\d.]+s\)\.")


@pytest.fixture(scope="module")
def running_lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if network.lab_namespaces():
        pytest.skip("a lab is already running on this machine")
    os.environ["FLOWLENS_LAB_DIR"] = str(tmp_path_factory.mktemp("lab"))
    spec = LabSpec(weights_mib=32, cooldown_s=12, agent_interval_s=1.0, visibility_timeout_s=30)
    try:
        yield lab.up(spec)
    finally:
        teardown.down()
        assert teardown.leftovers() == []
        os.environ.pop("FLOWLENS_LAB_DIR", None)


def runtime_pods() -> list[dict]:
    return [p for p in lab.status()["pods"] if p["workload"] == "sdruntime"]




def model_loads() -> dict[str, float]:
    logs = lab_state.lab_dir() / "logs"
    loads = {}
    for path in logs.glob("sdruntime-*.runtime.log"):
        match = MODEL_LINE.search(path.read_text())
        if match:
            loads[path.name.removesuffix(".runtime.log")] = float(match.group("weights"))
    return loads


def agent_metric(node_ns: str, name: str, **labels: str) -> float:
    text = in_ns(node_ns, "curl", "-s", "http://127.0.0.1:9101/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_up_builds_the_scenario_fast_and_reports_it(running_lab):
    status = running_lab
    assert status["up"] and status["up_seconds"] < 60
    ui = [p for p in status["pods"] if p["namespace"] == "ui"]
    assert len(ui) == 3 and {p["zone"] for p in ui} == {"us-east-1b"}
    assert status["services"][0]["cluster_ip"] == "10.96.0.10"
    node = status["nodes"][0]
    assert (node["instance_type"], node["bandwidth_mbit"], node["zone"]) == ("m5.xlarge", 100.0, "us-east-1b")
    for pod in ui:  # the inventory's addresses are the kernel's
        assert f"inet {pod['ip']}/32" in in_ns(pod["netns"], "ip", "-4", "addr", "show", "eth0")


def test_load_scales_out_loads_models_and_produces_outputs(running_lab):
    summary = send(every=2.0, duration=16.0)
    assert summary == {"sent": 24, "rejected": 0}
    pods = wait_for(lambda: len(runtime_pods()) >= 2 and runtime_pods(), timeout=60)
    assert len(pods) >= 2
    loads = wait_for(lambda: len(model_loads()) >= 2 and model_loads(), timeout=90)
    assert all(seconds > 0 for seconds in loads.values())
    state = lab_state.read()
    made = state["aws"]

    def outputs() -> tuple[list[str], list[dict]]:
        from inference_workload import aws

        with aws_side.aws_environment(state["spec"]["region"]):
            s3, sqs = aws.client("s3"), aws.client("sqs")
            notes = []
            for _ in range(10):
                batch = sqs.receive_message(QueueUrl=made["notification_queue_url"], MaxNumberOfMessages=10,
                                            WaitTimeSeconds=1).get("Messages", [])
                notes += [json.loads(m["Body"]) for m in batch]
                if not batch:
                    break
            # Listed after the notifications, so every notified task's objects are there.
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=made["output_bucket"]).get("Contents", [])]
            return keys, notes

    keys, notes = wait_for(lambda: (r := aws_side.in_namespace(network.AWS_NS, outputs))[1] and r, timeout=120,
                           every=2)
    done = [n for n in notes if n.get("status") == "completed"]
    assert done, notes
    bucket = f"s3://{made['output_bucket']}/"
    for note in done:  # <prefix>/<id>/<id>-<rand4>-<n>.png and <prefix>/<id>/<id>-<rand4>.out
        task = re.escape(note["id"])
        out_key = note["output_url"].removeprefix(bucket)
        assert re.fullmatch(rf"[^/]+/{task}/{task}-[0-9a-z]{{4}}\.out", out_key) and out_key in keys, note
        for url in note["image_url"]:
            key = url.removeprefix(bucket)
            assert re.fullmatch(rf"[^/]+/{task}/{task}-[0-9a-z]{{4}}-\d+\.png", key) and key in keys, note
    kinds = {re.sub(r"^load-\d+-|-[0-9a-f]+$", "", n["id"]) for n in done}
    assert kinds == {"t2i", "i2i", "up"}, kinds


def test_small_nodes_exceed_their_inbound_allowance_during_model_loads(running_lab):
    nodes = [n for n in lab.status()["nodes"] if n["pool"] == "sdruntime"]
    assert nodes and all(n["instance_type"] == "g5.2xlarge" for n in nodes)
    exceeded = sum(agent_metric(n["netns"], "bw_in_allowance_exceeded") for n in nodes)

    out_of_order = 0.0
    for _ in range(20):  # scraped as Prometheus would: a new flow's series shows once read
        out_of_order = sum(agent_metric(n["netns"], "flowlens_flow_received_out_of_order_segments_total",
                                        remote_ip="10.9.0.10") for n in nodes)
        if out_of_order:
            break
        time.sleep(0.5)
    assert exceeded > 0, "the shaper dropped weight downloads beyond the allowance"
    assert out_of_order > 0, "the S3 flows saw the losses"


def test_scales_back_to_zero_after_the_cooldown(running_lab):
    def runtime_nodes() -> list[dict]:
        return [n for n in lab.status()["nodes"] if n["pool"] == "sdruntime"]

    wait_for(lambda: not runtime_pods() and not runtime_nodes(), timeout=120, every=1)
    events = [e["message"] for e in lab_state.read()["events"]]
    assert any("-> 0" in e for e in events)


def test_large_nodes_load_faster(running_lab):
    small = min(model_loads().values())
    lab.set_node_type("g5.4xlarge")
    before = set(model_loads())
    send(every=2.0, duration=2.0)
    loads = wait_for(lambda: (set(model_loads()) - before) and model_loads(), timeout=90)
    large = min(loads[name] for name in set(loads) - before)
    nodes = [n for n in lab.status()["nodes"] if n["pool"] == "sdruntime"]
    assert nodes and all(n["instance_type"] == "g5.4xlarge" for n in nodes)
    assert large < small, (large, small)
