"""Files flowlens writes (store, WAL, events, spool) are private to its user.

The processes set their file-creation mask at start, so every file and folder they or their
libraries (DuckDB's WAL) create is 0600 / 0700: flows show who talks to whom.
"""

from __future__ import annotations

import os


def private_files() -> None:
    os.umask(0o077)
