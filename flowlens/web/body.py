"""Request bodies read with bounds: declared size checked first, then read and inflated
chunk by chunk with a running bound and a timeout between chunks.

A body is never held bigger than its limit: a ``Content-Length`` over the limit is refused
before a byte is read, a body without one is cut off as soon as it passes the limit, and a
gzip body is inflated incrementally with the same bound on what comes out (a small bomb
cannot become a big buffer). Gzip must be whole: its CRC and length trailer present and
right, nothing after it.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

from flowlens.web.server import ServerStats


class BodyError(Exception):
    """A body refused: the HTTP status and a message that says what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Disconnected(Exception):
    """The client went away before its body was read."""


def declared_length(value: str | None, limit: int) -> int | None:
    """The ``Content-Length`` header checked against ``limit`` before reading."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise BodyError(400, f"Content-Length {value!r} is not a number") from None
    if length < 0:
        raise BodyError(400, "Content-Length is negative")
    if length > limit:
        raise BodyError(413, f"body of {length} bytes; the limit is {limit}")
    return length


async def read_limited(chunks: AsyncIterator[bytes], limit: int, timeout: float,
                       stats: ServerStats | None = None) -> bytes:
    """The whole body, or :class:`BodyError` past ``limit`` bytes or ``timeout`` s of silence."""
    parts, size = [], 0
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), timeout)
        except StopAsyncIteration:
            return b"".join(parts)
        except TimeoutError:
            if stats is not None:
                stats.body_timeouts += 1
            raise BodyError(408, f"the body stopped coming for {timeout:g} s") from None
        except Exception as err:  # starlette's ClientDisconnect and its kind
            if type(err).__name__ == "ClientDisconnect":
                if stats is not None:
                    stats.disconnects += 1
                raise Disconnected() from None
            raise
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"body over {limit} bytes")
        parts.append(chunk)


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Decode ``Content-Encoding`` (identity or gzip) with a bound on the result."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        if len(body) > limit:
            raise BodyError(413, f"body over {limit} bytes")
        return body
    if encoding != "gzip":
        raise BodyError(415, f"unsupported Content-Encoding {encoding!r}: send gzip or nothing")
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise BodyError(400, f"the body is not valid gzip: {err}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise BodyError(413, f"body over {limit} bytes once decompressed")
    if not inflater.eof:
        raise BodyError(400, "the gzip body is truncated: its end (CRC and length) is missing")
    if inflater.unused_data:
        raise BodyError(400, f"{len(inflater.unused_data)} bytes follow the end of the gzip body")
    return data
