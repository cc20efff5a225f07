"""Checkpoints: deterministic safetensors, multipart upload, Mountpoint-style ranged reads."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError
from safetensors.numpy import load

from inference_workload import aws, weights
from inference_workload.aws import Provisioned

MIB = weights.MIB


def test_build_is_deterministic_and_sized() -> None:
    data = weights.build_checkpoint(3 * MIB + 6, seed=5)
    assert data == weights.build_checkpoint(3 * MIB + 6, seed=5)
    assert data != weights.build_checkpoint(3 * MIB + 6, seed=6)
    tensors = load(data)
    assert sum(t.nbytes for t in tensors.values()) == 3 * MIB + 6
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.float16)}
    assert len(data) - (3 * MIB + 6) < 4096  # only the header on top


class GetRecorder:
    """Counts the GetObject requests actually sent, with their Range headers."""

    def __init__(self, s3: Any) -> None:
        self.ranges: list[str] = []
        s3.meta.events.register("before-send.s3.GetObject", self)

    def __call__(self, request: Any, **_: Any) -> None:
        value = request.headers.get("Range", "")
        self.ranges.append(value.decode() if isinstance(value, bytes) else value)


@pytest.mark.parametrize(("size", "part", "concurrency"), [
    (5 * MIB + 123, 1 * MIB, 1),
    (5 * MIB + 123, 2 * MIB, 3),
    (3 * MIB, 8 * MIB, 4),
])
def test_round_trip_with_ranged_gets(provisioned: Provisioned, size: int, part: int, concurrency: int) -> None:
    data = weights.build_checkpoint(size, seed=2)
    weights.upload_checkpoint(data, provisioned.models_bucket, "m.safetensors", part_size=MIB)
    s3 = aws.client("s3", max_pool_connections=10)
    recorder = GetRecorder(s3)
    tensors, stats = weights.read_checkpoint(provisioned.models_bucket, "m.safetensors", s3=s3, part_size=part,
                                             concurrency=concurrency)
    expected_requests = math.ceil(len(data) / part)
    assert len(recorder.ranges) == stats.requests == expected_requests
    spans = sorted(tuple(map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", r).groups())) for r in recorder.ranges)
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - 1
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(spans))  # contiguous, no overlap
    original = load(data)
    assert tensors.keys() == original.keys()
    for name, tensor in original.items():
        np.testing.assert_array_equal(tensors[name], tensor)
    assert stats.bytes == len(data) and stats.read_seconds > 0 and stats.parse_seconds > 0


def test_large_upload_is_multipart(provisioned: Provisioned) -> None:
    s3 = aws.client("s3")
    calls: list[str] = []
    s3.meta.events.register("before-send.s3.*", lambda request, **kw: calls.append(kw["event_name"]))
    data = weights.build_checkpoint(12 * MIB)
    weights.upload_checkpoint(data, provisioned.models_bucket, "big", s3=s3, part_size=MIB)
    # 1 MiB is below S3's 5 MiB minimum part: 12 MiB + header goes in 3 parts of at most 5 MiB.
    assert calls.count("before-send.s3.UploadPart") == 3
    assert "before-send.s3.CompleteMultipartUpload" in calls
    assert aws.client("s3").head_object(Bucket=provisioned.models_bucket, Key="big")["ContentLength"] == len(data)


def test_missing_object_raises(provisioned: Provisioned) -> None:
    with pytest.raises(ClientError):
        weights.read_checkpoint(provisioned.models_bucket, "absent.safetensors")
