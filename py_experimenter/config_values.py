"""A keyfield's ``values``: a list, a single value, or a range ``{start, stop, step}``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from py_experimenter.config_checker import Checker, type_word

#: A ``{start, stop, step}`` range may give at most this many values.
MAX_RANGE_VALUES = 1_000_000
_VALUE_TYPES = (str, int, float, bool, date)


def _scalar(check: Checker, value: Any, path: str) -> Any:
    if not isinstance(value, _VALUE_TYPES) or (isinstance(value, float) and not math.isfinite(value)):
        check.fail(
            path, f"a keyfield value must be a string, number, boolean or date, got {type_word(value)}"
        )
    return value


def parse_values(check: Checker, raw: Any, path: str) -> tuple[Any, ...]:
    """A keyfield's ``values``: a list, a single value, or a range ``{start, stop, step}`` (stop exclusive)."""
    fix = (
        "give a list, a single value, or a range {start, stop, step}; or remove 'values' to fill from Python"
    )
    if raw is None or (isinstance(raw, (list, tuple)) and not raw):
        check.fail(path, f"values is empty; {fix}")
    if isinstance(raw, (list, tuple)):
        return tuple(_scalar(check, v, f"{path}[{i}]") for i, v in enumerate(raw))
    if not isinstance(raw, Mapping):
        return (_scalar(check, raw, path),)
    check.keys(raw, path, ("start", "stop", "step"), required=("start", "stop"))
    start = check.real(raw["start"], f"{path}.start")
    stop = check.real(raw["stop"], f"{path}.stop")
    step = check.real(1 if raw.get("step") is None else raw["step"], f"{path}.step")
    if step == 0:
        check.fail(
            f"{path}.step", "step must not be 0; use a positive step (or a negative one to count down)"
        )
    if all(isinstance(v, int) for v in (start, stop, step)):
        count = len(range(int(start), int(stop), int(step)))
    else:  # exact decimal steps: 0.1, 0.2, 0.3 rather than 0.30000000000000004
        d_start, d_stop, d_step = (Decimal(repr(v)) for v in (start, stop, step))
        count = max(0, math.ceil((d_stop - d_start) / d_step))
    if count == 0:
        check.fail(
            path,
            f"the range start={start}, stop={stop}, step={step} is empty (stop is exclusive); "
            "for counting up use start < stop and a positive step",
        )
    if count > MAX_RANGE_VALUES:
        check.fail(path, f"the range gives {count} values, more than {MAX_RANGE_VALUES}; use a bigger step")
    if all(isinstance(v, int) for v in (start, stop, step)):
        return tuple(range(int(start), int(stop), int(step)))
    return tuple(float(d_start + i * d_step) for i in range(count))
