"""An ASGI middleware in front of a whole app: tokens checked and body sizes bounded before
the app sees a request, and bodies read under a timeout.

Each request is classified by a ``policy`` (method, path) → ``Rule``: which token set it needs
(none, readers', writers') and how big its body may be. The token comes from the
``Authorization: Bearer`` header or, for a browser, the ``flowlens_token`` cookie. A declared
``Content-Length`` over the limit is refused (413) before a byte is read; a body that grows
past it while streaming, or stalls for ``body_timeout`` seconds, ends the request with 413 or
408. A client that disconnects is counted, not logged as an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from flowlens.web.auth import AuthError, TokenSet
from flowlens.web.body import BodyError, declared_length
from flowlens.web.server import ServerStats

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "flowlens_token"


@dataclass(frozen=True, slots=True)
class Rule:
    tokens: TokenSet | None  # None: open
    max_body: int = 1 << 20
    refused: Callable[[int], None] | None = None  # told the status of each request refused here


class Guard:
    def __init__(self, app: App, policy: Callable[[str, str], Rule], stats: ServerStats,
                 body_timeout: float = 30.0) -> None:
        self.app, self.policy, self.stats, self.body_timeout = app, policy, stats, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.policy(scope["method"], scope["path"])
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if rule.tokens is not None:
                rule.tokens.check(headers.get("authorization") or _cookie_token(headers.get("cookie")))
            declared_length(headers.get("content-length"), rule.max_body)
        except (AuthError, BodyError) as err:
            if rule.refused is not None:
                rule.refused(err.status)
            await _answer(send, err.status, str(err))
            return
        await self.app(scope, self._bounded(receive, rule.max_body), send)

    def _bounded(self, receive: Receive, limit: int) -> Receive:
        size = 0

        async def bounded() -> Message:
            nonlocal size
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                self.stats.body_timeouts += 1
                raise BodyError(408, f"the request body stopped coming for {self.body_timeout:g} s") from None
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise BodyError(413, f"request body over {limit} bytes")
            elif message["type"] == "http.disconnect":
                self.stats.disconnects += 1
            return message

        return bounded


def _cookie_token(header: str | None) -> str | None:
    if not header:
        return None
    cookie = SimpleCookie()
    try:
        cookie.load(header)
    except Exception:  # a malformed cookie header carries no token
        return None
    morsel = cookie.get(COOKIE)
    return f"Bearer {morsel.value}" if morsel is not None else None


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="flowlens"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
