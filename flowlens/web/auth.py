"""Bearer tokens: where they come from, and the check every protected endpoint makes.

Tokens are read from files (one per line, ``#`` comments allowed) or from the environment, so
that they never have to appear on a command line, where any local user can read them in
``/proc/<pid>/cmdline``. A token given with a flag is still accepted, with a warning. Token
files are read again when they change (a Kubernetes Secret rotated in place), at most once a
second. No token configured means an open endpoint (a laptop, the lab). Comparisons take
constant time.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from flowlens.model.errors import ConfigError

log = logging.getLogger(__name__)


class AuthError(Exception):
    """A request without a valid token: the HTTP status and a message that says what to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_token_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read token file {path}: {err.strerror}") from None
    tokens = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not tokens:
        raise ConfigError(f"token file {path} holds no token (one per line)")
    return tokens


def _checked(tokens: list[str], what: str) -> frozenset[str]:
    for token in tokens:
        if len(token) < 16 or any(c.isspace() for c in token):
            raise ConfigError(f"a {what} must be at least 16 characters without spaces (e.g. `openssl rand -hex 24`)")
    return frozenset(tokens)


class TokenSet:
    """The tokens one side accepts (or, for a client, the one it sends), kept up to date with
    their files."""

    def __init__(self, files: Iterable[str] = (), env: str = "", flags: Iterable[str] = (),
                 what: str = "token") -> None:
        self.files = tuple(f for f in files if f)
        self.what = what
        self._fixed: list[str] = []
        if env and os.environ.get(env):
            self._fixed += [t.strip() for t in os.environ[env].split(",") if t.strip()]
        flagged = [t for t in flags if t]
        if flagged:
            log.warning("a %s was given on the command line, where local users can read it: prefer a file or "
                        "the environment", what)
            self._fixed += flagged
        self._lock = threading.Lock()
        self._stamps: tuple[float, ...] = ()
        self._checked_at = 0.0
        self._first = ""
        self._tokens = self._load()

    def _stamp(self) -> tuple[float, ...]:
        stamps = []
        for path in self.files:
            try:
                stamps.append(os.stat(path).st_mtime)
            except OSError:
                stamps.append(-1.0)
        return tuple(stamps)

    def _load(self) -> frozenset[str]:
        self._stamps = self._stamp()
        tokens = list(self._fixed)
        for path in self.files:
            tokens += read_token_file(path)
        self._first = tokens[0] if tokens else ""
        return _checked(tokens, self.what)

    @property
    def tokens(self) -> frozenset[str]:
        if self.files and time.monotonic() - self._checked_at >= 1.0:
            with self._lock:
                self._checked_at = time.monotonic()
                if self._stamp() != self._stamps:
                    try:
                        self._tokens = self._load()
                        log.info("%s file changed: %d tokens now", self.what, len(self._tokens))
                    except ConfigError as err:  # keep the last good tokens
                        log.warning("%s", err)
        return self._tokens

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def first(self) -> str:
        """The token a client sends (the first one given); empty when none."""
        self.tokens  # noqa: B018 (re-read the files if they changed)
        return self._first

    def check(self, header: str | None) -> None:
        """Raise :class:`AuthError` unless ``header`` carries one of the tokens (none: open)."""
        check_bearer(header, self.tokens)


def check_bearer(header: str | None, tokens: frozenset[str]) -> None:
    """Raise :class:`AuthError` unless ``header`` carries one of ``tokens`` (none: open)."""
    if not tokens:
        return
    if not header:
        raise AuthError(401, "missing Authorization: Bearer <token> header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "the Authorization header must be 'Bearer <token>'")
    token = token.strip()
    if not any(hmac.compare_digest(token, known) for known in tokens):
        raise AuthError(403, "unknown token")
