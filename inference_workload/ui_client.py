"""The scenario's ``client-ui``: calls the runtime directly through its ClusterIP Service.

Every few seconds it checks the runtime (``GET /sdapi/v1/memory``) and asks for a small
text-to-image preview, the interactive traffic of a UI. Each call opens a new connection, as
simple UI back ends do. Failures are logged and the loop goes on.
"""

from __future__ import annotations

import argparse
import logging
import signal
import time

import httpx

log = logging.getLogger("client-ui")

PREVIEW = {"prompt": "a dog, preview", "steps": 2, "width": 64, "height": 64, "seed": 1}


def one_round(url: str, timeout: float) -> tuple[bool, bool]:
    """(memory probe ok, preview ok)."""
    results = []
    for method, path, body in (("GET", "/sdapi/v1/memory", None), ("POST", "/sdapi/v1/txt2img", PREVIEW)):
        try:
            with httpx.Client(timeout=timeout) as client:  # a fresh connection per call
                response = client.request(method, url + path, json=body)
            results.append(response.status_code == 200)
            if response.status_code != 200:
                log.warning("%s %s -> %s", method, path, response.status_code)
        except httpx.HTTPError as err:
            results.append(False)
            log.warning("%s %s failed: %s", method, path, err)
    return results[0], results[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://sdruntime-service:8080", help="the runtime Service")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    running = {"on": True}
    signal.signal(signal.SIGTERM, lambda *_: running.update(on=False))
    while running["on"]:
        started = time.monotonic()
        one_round(args.url.rstrip("/"), args.timeout)
        time.sleep(max(0.0, args.every - (time.monotonic() - started)))


if __name__ == "__main__":
    main()
