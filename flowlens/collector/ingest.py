"""Receiving a report: size limits, decompression, authentication, strict validation.

Every refusal is an :class:`IngestError` with the HTTP status and a message that says what is
wrong; nothing of a refused report is stored.
"""

from __future__ import annotations

import hmac
import zlib

from pydantic import ValidationError

from flowlens.model.errors import FlowlensError
from flowlens.model.report import Report

MAX_BODY_BYTES = 16 << 20  # as sent (compressed)
MAX_REPORT_BYTES = 128 << 20  # once decompressed: a report of 200,000 flows fits


class IngestError(FlowlensError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_token(header: str | None, tokens: frozenset[str]) -> None:
    """No tokens configured means an open collector (a lab, a laptop)."""
    if not tokens:
        return
    if not header:
        raise IngestError(401, "missing Authorization: Bearer <token> header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise IngestError(401, "the Authorization header must be 'Bearer <token>'")
    if not any(hmac.compare_digest(token.strip(), known) for known in tokens):
        raise IngestError(403, "unknown token")


def decompress(body: bytes, encoding: str | None) -> bytes:
    if len(body) > MAX_BODY_BYTES:
        raise IngestError(413, f"report body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise IngestError(415, f"unsupported Content-Encoding {encoding!r}: send gzip or nothing")
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, MAX_REPORT_BYTES + 1)
    except zlib.error as err:
        raise IngestError(400, f"the body is not valid gzip: {err}") from None
    if len(data) > MAX_REPORT_BYTES or inflater.unconsumed_tail:
        raise IngestError(413, f"report is over {MAX_REPORT_BYTES} bytes once decompressed")
    return data


def parse(data: bytes) -> Report:
    try:
        return Report.model_validate_json(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "report"
        more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
        raise IngestError(422, f"invalid report: {where}: {first['msg']}{more}") from None


def decode(body: bytes, encoding: str | None) -> Report:
    return parse(decompress(body, encoding))
