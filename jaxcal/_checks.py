"""Argument checks shared by training, models, metrics and data: ints, floats, callables."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxcal.calibration._checks import check_option, check_positive_int

__all__ = [
    "check_callable",
    "check_float",
    "check_int",
    "check_option",
    "check_positive_int",
    "check_positive_ints",
    "is_int",
    "is_positive_int",
]


def is_int(value: Any) -> bool:
    """Whether `value` is a Python or numpy integer (bools are not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_positive_int(value: Any) -> bool:
    """Whether `value` is an integer >= 1 (bools are not)."""
    return is_int(value) and value >= 1


def check_int(name: str, value: Any, *, minimum: int | None = 1) -> int:
    """Returns `value` as an int; TypeError unless an integer, ValueError if below `minimum`.

    Args:
      name: the argument's name, for the message.
      value: the value to check (bools are refused).
      minimum: the smallest allowed value; None for no bound.
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_positive_ints(name: str, values: Any, *, allow_empty: bool) -> tuple[int, ...]:
    """Returns `values` as a tuple; ValueError unless every entry is an int >= 1."""
    values = tuple(values)
    if not allow_empty and not values:
        raise ValueError(f"{name} must not be empty")
    if not all(is_positive_int(v) for v in values):
        raise ValueError(f"{name} must hold positive ints, got {values!r}")
    return values


def check_float(name: str, value: Any, *, positive: bool = False) -> float:
    """Returns `value` as a float; TypeError unless a real number, ValueError unless finite and
    >= 0 (> 0 with `positive`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a float, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return float(value)


def check_callable(name: str, value: Any) -> None:
    """TypeError unless `value` is None or callable."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value)}")
