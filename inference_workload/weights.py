"""Model checkpoints: create a real safetensors file, upload it, and read it back like Mountpoint.

The checkpoint is deterministic (a seed fixes every value) fp16 tensors with SDXL-like names,
about ``size`` bytes of tensor data plus the small safetensors header. The reader reproduces how
Mountpoint for S3 serves a file the runtime reads from its mount: ranged GETs of ``part_size``
bytes, a few in flight at once, assembled in memory, then parsed with safetensors. Its
``ReadStats`` carry the timing phases and request counts the runtime logs and exports.

    python -m inference_workload.weights --bucket sd-models --key sdxl-turbo.safetensors --size-mib 256
"""

from __future__ import annotations

import argparse
import io
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from boto3.s3.transfer import TransferConfig
from safetensors.numpy import load, save

from inference_workload.aws import client

__all__ = ["MIB", "ReadStats", "build_checkpoint", "fetch_ranges", "read_checkpoint", "read_local_checkpoint",
           "upload_checkpoint"]

MIB = 1024 * 1024
DEFAULT_SIZE = 256 * MIB
DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_CONCURRENCY = 4
MIN_UPLOAD_PART = 5 * MIB
TENSOR_BYTES = 16 * MIB  # one tensor per 16 MiB keeps shapes realistic and memory spikes small
DTYPE = np.float16


@dataclass(frozen=True)
class ReadStats:
    """What reading a checkpoint from S3 cost."""

    bytes: int
    requests: int
    part_size: int
    concurrency: int
    read_seconds: float
    parse_seconds: float

    @property
    def seconds(self) -> float:
        return self.read_seconds + self.parse_seconds

    @property
    def throughput_mib_s(self) -> float:
        return self.bytes / MIB / self.read_seconds if self.read_seconds else 0.0


def build_checkpoint(size: int = DEFAULT_SIZE, seed: int = 0) -> bytes:
    """A safetensors file with ``size`` bytes of fp16 tensor data (rounded down to whole elements)."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    remaining = size // np.dtype(DTYPE).itemsize
    per_tensor = TENSOR_BYTES // np.dtype(DTYPE).itemsize
    index = 0
    while remaining > 0:
        count = min(per_tensor, remaining)
        name = f"model.diffusion_model.input_blocks.{index}.0.weight"
        cols = 1024 if count % 1024 == 0 else 1
        tensors[name] = (rng.standard_normal(count, dtype=np.float32) * 0.02).astype(DTYPE).reshape(-1, cols)
        remaining -= count
        index += 1
    # One metadata key only: safetensors writes the metadata map in hash order, which would make
    # the bytes differ from run to run.
    return save(tensors, metadata={"format": "pt"})


def upload_checkpoint(data: bytes, bucket: str, key: str, *, s3: Any = None,
                      part_size: int = DEFAULT_PART_SIZE, concurrency: int = DEFAULT_CONCURRENCY) -> float:
    """Upload ``data`` (multipart above ``part_size``); returns the seconds it took.

    S3 parts are at least 5 MiB (all but the last), so a smaller ``part_size`` is raised to that.
    """
    s3 = s3 or client("s3", max_pool_connections=max(10, concurrency))
    part_size = max(part_size, MIN_UPLOAD_PART)
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=concurrency)
    start = time.perf_counter()
    s3.upload_fileobj(io.BytesIO(data), bucket, key, Config=config)
    return time.perf_counter() - start


def fetch_ranges(bucket: str, key: str, *, s3: Any = None, part_size: int = DEFAULT_PART_SIZE,
                 concurrency: int = DEFAULT_CONCURRENCY) -> tuple[bytearray, int]:
    """Read a whole object with ranged GETs into memory; returns the bytes and the request count."""
    s3 = s3 or client("s3", max_pool_connections=max(10, concurrency))
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    buffer = bytearray(size)
    view = memoryview(buffer)

    def fetch(start: int) -> None:
        end = min(start + part_size, size) - 1
        body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")["Body"]
        chunk = body.read()
        if len(chunk) != end - start + 1:
            raise OSError(f"s3://{bucket}/{key}: range {start}-{end} returned {len(chunk)} bytes")
        view[start:end + 1] = chunk

    starts = range(0, size, part_size)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="ranged-get") as pool:
        # list() re-raises the first failed range here rather than losing it in a future.
        list(pool.map(fetch, starts))
    return buffer, math.ceil(size / part_size)


def read_checkpoint(bucket: str, key: str, *, s3: Any = None, part_size: int = DEFAULT_PART_SIZE,
                    concurrency: int = DEFAULT_CONCURRENCY,
                    clock: Callable[[], float] = time.perf_counter) -> tuple[dict[str, np.ndarray], ReadStats]:
    """Load a safetensors checkpoint from S3 the way Mountpoint serves it, with timings."""
    start = clock()
    data, requests = fetch_ranges(bucket, key, s3=s3, part_size=part_size, concurrency=concurrency)
    fetched = clock()
    tensors = load(bytes(data))
    parsed = clock()
    stats = ReadStats(len(data), requests, part_size, concurrency, fetched - start, parsed - fetched)
    return tensors, stats


def read_local_checkpoint(path: str,
                          clock: Callable[[], float] = time.perf_counter) -> tuple[dict[str, np.ndarray], ReadStats]:
    """Load a checkpoint from a file (an actual Mountpoint mount, or a local copy)."""
    start = clock()
    with open(path, "rb") as fh:
        data = fh.read()
    fetched = clock()
    tensors = load(data)
    parsed = clock()
    return tensors, ReadStats(len(data), 1, len(data), 1, fetched - start, parsed - fetched)


def main(argv: list[str] | None = None) -> None:
    """Build a checkpoint and upload it; print its size and the upload time."""
    parser = argparse.ArgumentParser(prog="python -m inference_workload.weights", description=main.__doc__)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", default="sdxl-turbo.safetensors")
    parser.add_argument("--size-mib", type=float, default=DEFAULT_SIZE / MIB)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part-size-mib", type=float, default=DEFAULT_PART_SIZE / MIB)
    args = parser.parse_args(argv)
    data = build_checkpoint(int(args.size_mib * MIB), args.seed)
    seconds = upload_checkpoint(data, args.bucket, args.key, part_size=int(args.part_size_mib * MIB))
    print(f"uploaded s3://{args.bucket}/{args.key}: {len(data)} bytes in {seconds:.2f}s")


if __name__ == "__main__":
    main()
