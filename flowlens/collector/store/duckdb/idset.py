"""The set of flow-key ids already stored, kept in memory so ingest never asks the database.

Ingest needs, per batch of a few thousand rows, "which of these ids are new?". A sorted numpy
array answers that with one vectorised binary search and costs 8 bytes per id (a Python set
would cost ~70); ids added since the last merge sit in a small second array so that adding a
few new keys does not copy millions.
"""

from __future__ import annotations

import numpy as np

_MERGE_AT = 1 << 16


class IdSet:
    def __init__(self, ids: np.ndarray | None = None) -> None:
        self._base = np.unique(ids.astype(np.uint64)) if ids is not None else np.empty(0, np.uint64)
        self._recent = np.empty(0, np.uint64)

    def __len__(self) -> int:
        return len(self._base) + len(self._recent)

    def missing(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: True where the id is not in the set."""
        return ~(_member(self._base, ids) | _member(self._recent, ids))

    def add(self, ids: np.ndarray) -> None:
        self._recent = np.union1d(self._recent, ids.astype(np.uint64))
        if len(self._recent) >= _MERGE_AT:
            self._base = np.union1d(self._base, self._recent)
            self._recent = np.empty(0, np.uint64)


def _member(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if not len(sorted_ids):
        return np.zeros(len(ids), bool)
    pos = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    return sorted_ids[pos] == ids
