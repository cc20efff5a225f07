"""Receiving a report: size limits, strict decompression, strict decoding, a sane time.

Every refusal is an :class:`IngestError` with the HTTP status and a message that says what is
wrong; nothing of a refused report is stored. Size and authentication are checked by the HTTP
layer before the body is read (:mod:`flowlens.web.body`); what is left here works on bytes.

Time: a report must end no later than ``max_skew`` seconds from now (a clock ahead of the
collector's) and no earlier than ``max_age`` ago (by default the raw retention: older rows
would be deleted at once, so the report is refused as too old rather than called a
duplicate). Both are 422: the agent keeps such a report and sends it again later, since a
clock can be fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowlens.model.errors import FlowlensError
from flowlens.model.report import MAX_FLOWS, Report, ReportError, decode_report
from flowlens.web.body import BodyError, inflate

# A full report of MAX_FLOWS flows is about 90 MB of JSON, 6 MB gzipped: these bound the
# memory one request can take (body, then inflated text, then decoded flows).
MAX_BODY_BYTES = 16 << 20  # as sent (compressed)
MAX_REPORT_BYTES = 128 << 20  # once decompressed


class IngestError(FlowlensError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Which report times the collector takes: not older than ``max_age``, not ahead of its
    clock by more than ``max_skew``."""

    max_age: float = 7 * 86400.0
    max_skew: float = 300.0

    def check(self, report: Report, now: float) -> None:
        start, end = report.interval.start, report.interval.end
        if end > now + self.max_skew:
            raise IngestError(422, f"report ends {end - now:.0f} s in the future (at most {self.max_skew:.0f} s "
                                   "allowed): check the agent's clock (NTP)")
        if start < now - self.max_age:
            raise IngestError(422, f"report is too old: it starts {(now - start) / 86400:.1f} days ago, past "
                                   f"the {self.max_age / 86400:g}-day window the store keeps")


def decode(body: bytes, encoding: str | None) -> Report:
    """Inflate (bounded, strict gzip) and decode one report."""
    try:
        data = inflate(body, encoding, MAX_REPORT_BYTES)
    except BodyError as err:
        raise IngestError(err.status, str(err)) from None
    try:
        return decode_report(data)
    except ReportError as err:
        raise IngestError(422, str(err)) from None


__all__ = ["MAX_BODY_BYTES", "MAX_FLOWS", "MAX_REPORT_BYTES", "IngestError", "TimeWindow", "decode"]
