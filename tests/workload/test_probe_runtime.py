"""`flowlens probe` against the reference runtime: its TTFT (= end-to-end for an image) agrees
within 5% with the request duration the runtime itself measures."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from flowlens.signals.probe import run, sdapi_request
from flowlens.signals.scrape import difference, parse
from inference_workload import runtime
from tests.workload.conftest import serving, wait_until


@pytest.fixture
def costly_runtime(tiny_model: tuple[str, str]) -> Iterator[str]:
    """The runtime with the default generation cost: a 256×256, 8-step image takes ~0.2 s."""
    bucket, key = tiny_model
    with serving(runtime.create_app(runtime.s3_loader(bucket, key))) as url:
        wait_until(lambda: httpx.get(f"{url}/sdapi/v1/memory").status_code == 200, timeout=30)
        yield url


def test_probe_agrees_with_the_runtime_own_measure(costly_runtime):
    url = costly_runtime
    before = parse(httpx.get(f"{url}/metrics").text)
    payload = {"prompt": "a dog", "steps": 8, "width": 256, "height": 256}
    summary = run(f"{url}/sdapi/v1/txt2img", "sdapi", requests=5, concurrency=1,
                  request=lambda client: sdapi_request(client, f"{url}/sdapi/v1/txt2img", payload))
    served = difference(before, parse(httpx.get(f"{url}/metrics").text))
    assert summary.failures == 0 and summary.output_tokens == 5
    server_mean = served.mean("e2e")
    assert server_mean and server_mean > 0.05
    assert summary.ttft_s["mean"] == summary.e2e_s["mean"], "one response: first output is the last"
    assert abs(summary.e2e_s["mean"] - server_mean) <= 0.05 * server_mean, (summary.e2e_s, server_mean)
