"""A tiny predicate algebra over stored-record columns, with a reference evaluator.

Views, filters and the "who counts the bytes" rule are written once as predicates; each
engine compiles them to its own query language (DuckDB SQL in ``flowlens.collector``), and
``evaluate`` runs the same predicate on one row as a plain mapping, which is what tests and
in-memory fallbacks compare engines against. Column names are those of
``flowlens.model.records.FLOW_SCHEMA``; values are always bound, never spliced into text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class IsNull:
    column: str


@dataclass(frozen=True, slots=True)
class Eq:
    column: str
    value: Any


@dataclass(frozen=True, slots=True)
class In:
    column: str
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Pred


@dataclass(frozen=True, slots=True)
class All:
    """True when every operand is; ``All()`` is true."""

    operands: tuple[Pred, ...]


@dataclass(frozen=True, slots=True)
class Any_:
    """True when one operand is; ``Any_()`` is false."""

    operands: tuple[Pred, ...]


Pred = IsNull | Eq | In | Not | All | Any_

TRUE: Pred = All(())


def not_null(column: str) -> Pred:
    return Not(IsNull(column))


def all_of(*preds: Pred) -> Pred:
    return All(tuple(p for p in preds if p != TRUE))


def any_of(*preds: Pred) -> Pred:
    return Any_(tuple(preds))


def columns(pred: Pred) -> set[str]:
    """Every column a predicate reads (engines check them against their schema)."""
    match pred:
        case IsNull(column) | Eq(column, _) | In(column, _):
            return {column}
        case Not(operand):
            return columns(operand)
        case All(operands) | Any_(operands):
            return set().union(*(columns(p) for p in operands))
    raise TypeError(f"not a predicate: {pred!r}")


def evaluate(pred: Pred, row: Mapping[str, Any]) -> bool:
    """SQL semantics for the cases used here: a comparison with NULL is false."""
    match pred:
        case IsNull(column):
            return row[column] is None
        case Eq(column, value):
            return row[column] is not None and row[column] == value
        case In(column, values):
            return row[column] is not None and row[column] in values
        case Not(operand):
            return not evaluate(operand, row)
        case All(operands):
            return all(evaluate(p, row) for p in operands)
        case Any_(operands):
            return any(evaluate(p, row) for p in operands)
    raise TypeError(f"not a predicate: {pred!r}")
