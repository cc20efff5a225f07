"""The report an agent sends to the collector every interval: schema version 1.

JSON, optionally gzip-compressed (``Content-Encoding: gzip``), POSTed to
``/api/v1/reports`` with ``Authorization: Bearer <token>``. ``report_id`` makes a report
idempotent: the collector stores a report once however often it is retried. Counters are the
interval's deltas. Decoding is strict and typed (msgspec): unknown fields, wrong types,
negative counters or malformed addresses refuse the whole report, with a message naming the
first bad field. See docs/report-schema.md.

Counters are bounded by what one interval can physically carry (:func:`counter_bound`): a
flow cannot move more than 2^37 bytes (137 GB, over a terabit a second) per second of its
interval, nor any other counter more. Valid reports can then be summed over hours and months
in 64-bit integers without overflow, and a report claiming more is refused instead of being
stored.
"""

from __future__ import annotations

import ipaddress
import math
from operator import attrgetter
from typing import Annotated, Literal

import msgspec

from flowlens.model.vocabulary import FLOW_COUNTER_NAMES, NODE_COUNTER_NAMES

SCHEMA_VERSION = 1
# Flows in one report: its decoding costs about 3 KB a flow at the collector (about 150 MB at
# the limit, for at most two reports at once); agents split bigger intervals into several.
MAX_FLOWS = 50_000
MAX_INTERVAL_SECONDS = 3600.0  # one report covers at most this long
MIN_INTERVAL_SECONDS = 0.05
RATE_BOUND = 2**37  # any counter, per second of the interval (bytes: > 1 Tbit/s)

Count = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
Epoch = Annotated[float, msgspec.Meta(gt=1e9, lt=1e11)]  # seconds since 1970, 2001 to 5138
Name = Annotated[str, msgspec.Meta(max_length=255)]


class ReportError(ValueError):
    """A report that cannot be accepted; the message names what is wrong."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class AgentInfo(_Strict):
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    instance_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    version: Annotated[str, msgspec.Meta(max_length=32)] = ""


class Interval(_Strict):
    start: Epoch  # epoch seconds
    end: Epoch

    @property
    def seconds(self) -> float:
        return self.end - self.start


# One flow of one interval: its key as the agent saw it, then every flow counter of the
# vocabulary, each 0 when absent.
FlowRecord = msgspec.defstruct(
    "FlowRecord",
    [("netns", Name), ("role", Literal["client", "server"]), ("local_ip", str), ("remote_ip", str),
     ("server_port", Annotated[int, msgspec.Meta(ge=0, le=65535)]), ("protocol", Literal["tcp"], "tcp"),
     ("service_ip", str | None, None), ("own", bool, False),
     *((name, Count, 0) for name in FLOW_COUNTER_NAMES)],
    bases=(_Strict,), gc=False, module=__name__,
)
FLOW_COUNTER_FIELDS = FLOW_COUNTER_NAMES


InterfaceDelta = msgspec.defstruct(
    "InterfaceDelta",
    [("iface", Annotated[str, msgspec.Meta(min_length=1, max_length=15)]),
     *((name, Count, 0) for name in NODE_COUNTER_NAMES if name != "tcp_retransmitted_segments")],
    bases=(_Strict,), module=__name__,
)


class NodeDelta(_Strict):
    interfaces: Annotated[list[InterfaceDelta], msgspec.Meta(max_length=1024)] = []  # type: ignore[valid-type]
    tcp_retransmitted_segments: Count = 0


class Report(_Strict):
    schema_version: Literal[1]
    report_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    agent: AgentInfo
    interval: Interval
    flows: Annotated[list[FlowRecord], msgspec.Meta(max_length=MAX_FLOWS)]  # type: ignore[valid-type]
    node: NodeDelta = NodeDelta()


_decoder = msgspec.json.Decoder(Report)
_encoder = msgspec.json.Encoder()


def encode_report(report: Report) -> bytes:
    return _encoder.encode(report)


def decode_report(data: bytes) -> Report:
    """Decode and check one report, or :class:`ReportError` naming the first problem."""
    try:
        report = _decoder.decode(data)
    except msgspec.ValidationError as err:
        raise ReportError(f"invalid report: {_where(str(err))}") from None
    except msgspec.DecodeError as err:
        raise ReportError(f"invalid report: the body is not valid JSON: {err}") from None
    check(report)
    return report


def _where(message: str) -> str:
    """msgspec's "... - at `$.flows[3].sent_bytes`" as "flows.3.sent_bytes: ..."."""
    text, _, path = message.rpartition(" - at `")
    if not text:
        return message
    where = path.rstrip("`").removeprefix("$").lstrip(".").replace("[", ".").replace("]", "") or "report"
    return f"{where}: {text}"


def counter_bound(seconds: float) -> int:
    """The most any counter of a row may hold for an interval this long."""
    return math.ceil(max(seconds, 1.0) * RATE_BOUND)


def check(report: Report) -> None:
    """What types alone cannot say: the interval's shape, addresses, counters within bounds."""
    seconds = report.interval.seconds
    if seconds < MIN_INTERVAL_SECONDS:
        raise ReportError(f"invalid report: interval: it lasts {seconds:g} s; it must last at least "
                          f"{MIN_INTERVAL_SECONDS:g} s and end after it starts")
    if seconds > MAX_INTERVAL_SECONDS:
        raise ReportError(f"invalid report: interval: it lasts {seconds:g} s, over {MAX_INTERVAL_SECONDS:g} s")
    bound = counter_bound(seconds)
    flows = report.flows
    for name in ("local_ip", "remote_ip", "service_ip"):
        for index, address in enumerate(map(attrgetter(name), flows)):
            if address is not None and address not in _VALID_ADDRESSES:
                _check_ip(address, f"flows.{index}.{name}")
    for name in FLOW_COUNTER_FIELDS:
        values = list(map(attrgetter(name), flows))
        if values and max(values) > bound:
            index = next(i for i, value in enumerate(values) if value > bound)
            raise ReportError(f"invalid report: flows.{index}.{name}: {values[index]} is more than an "
                              f"interval of {seconds:g} s can carry (at most {bound})")
    for index, iface in enumerate(report.node.interfaces):
        for name in InterfaceDelta.__struct_fields__[1:]:
            if getattr(iface, name) > bound:
                raise ReportError(f"invalid report: node.interfaces.{index}.{name}: {getattr(iface, name)} is more "
                                  f"than an interval of {seconds:g} s can carry (at most {bound})")


# Addresses already found valid: a cluster's addresses recur in every report.
_VALID_ADDRESSES: set[str] = set()


def _check_ip(value: str, where: str) -> None:
    try:
        canonical = str(ipaddress.ip_address(value))
    except ValueError:
        raise ReportError(f"invalid report: {where}: {value!r} is not an IP address") from None
    if canonical != value:
        raise ReportError(f"invalid report: {where}: {value!r} is not in canonical form ({canonical!r})")
    if len(_VALID_ADDRESSES) > 1_000_000:
        _VALID_ADDRESSES.clear()
    _VALID_ADDRESSES.add(value)
