"""The lab's regional services (S3, SNS, SQS): moto's server, with every response body paced at
what one client connection gets from S3.

Without pacing, how fast the lab's S3 serves a model's weights is whatever moto manages on this
machine's CPUs: around the larger node type's lab allowance, so whether moving to it ends the
allowance drops depended on the machine. Real S3 serves one connection at a rate well below a
25 Gbps node's allowance and above a 10 Gbps one's; ``--mbit`` is that rate on the lab's 100×
scale (180 Mbit/s ≙ 18 Gbps).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

CHUNK = 64 * 1024  # paced in pieces no bigger than a node's token bucket absorbs at once

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Paced:
    """WSGI middleware: each response's body leaves at no more than ``bytes_per_second``."""

    def __init__(self, app: App, bytes_per_second: float) -> None:
        self.app, self.rate = app, bytes_per_second

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        return self._paced(self.app(environ, start_response))

    def _paced(self, body: Iterable[bytes]) -> Iterator[bytes]:
        started, sent = time.monotonic(), 0
        try:
            for chunk in body:
                for at in range(0, len(chunk), CHUNK):
                    piece = chunk[at:at + CHUNK]
                    sent += len(piece)
                    ahead = sent / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                    yield piece
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


def main() -> None:
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mbit", type=float, default=180.0, help="each response body's rate, Mbit/s")
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Paced(app, args.mbit * 1e6 / 8), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
