"""Turn a compiled filter predicate (JSON) into a vectorized polars expression."""

from __future__ import annotations

from typing import Any

import polars as pl

_BINARY = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "ge": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
}


def _operand(node: Any) -> pl.Expr:
    if isinstance(node, dict) and "col" in node:
        return pl.col(node["col"])
    if isinstance(node, dict) and "op" in node:
        return to_expr(node)
    return pl.lit(node)


def to_expr(pred: dict) -> pl.Expr:
    """A null comparison is false: an event with a missing ``dwell_ms`` is not a long close-up."""
    op, args = pred["op"], pred["args"]
    if op in _BINARY:
        return _BINARY[op](_operand(args[0]), _operand(args[1])).fill_null(False)
    if op == "in":
        return _operand(args[0]).is_in(args[1]).fill_null(False)
    if op == "and":
        return to_expr(args[0]) & to_expr(args[1])
    if op == "or":
        return to_expr(args[0]) | to_expr(args[1])
    if op == "not":
        return ~to_expr(args[0])
    if op == "is_null":
        return _operand(args[0]).is_null()
    if op == "is_true":
        return _operand(args[0]).fill_null(False) == True  # noqa: E712 (a polars expression)
    raise ValueError(f"unknown predicate op {op!r}")
