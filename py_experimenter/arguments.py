"""Checks of call and command-line arguments, before anything touches the database.

Each check raises :class:`~py_experimenter.exceptions.ArgumentError` naming the parameter,
the value, the rule and an example. ``True`` / ``False`` are not accepted as integers.
"""

from __future__ import annotations

import warnings
from typing import Any

from py_experimenter.exceptions import ArgumentError

__all__ = ["check_bool", "check_execute_arguments", "check_optional_str", "parse_count", "positive_int"]


def positive_int(name: str, value: Any, *, allow: tuple[Any, ...] = (), meaning: str = "") -> Any:
    """``value`` if it is an ``int`` ≥ 1 (or one of ``allow``, e.g. ``None`` or ``-1``).

    :param name: the parameter as the caller knows it (``n_jobs``, ``--n-jobs``).
    :param meaning: what the allowed special values mean, for the message.
    """
    if any(value is special or (type(value) is int and value == special) for special in allow):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"{name}={value!r}: expected a positive integer such as 4, got "
                            f"{type(value).__name__}{meaning}")
    if value < 1:
        raise ArgumentError(f"{name}={value!r}: must be a positive integer (1 or more){meaning}")
    return value


def parse_count(name: str, text: str, *, allow: tuple[int, ...] = (), meaning: str = "") -> int:
    """A command-line / environment count: the text of a positive integer (or one of ``allow``)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ArgumentError(f"{name}={text!r}: not an integer; give a positive integer such as 4{meaning}") from None
    return int(positive_int(name, value, allow=tuple(allow), meaning=meaning))


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ArgumentError(f"{name}={value!r}: expected True or False, got {type(value).__name__}")
    return value


def check_optional_str(name: str, value: Any, example: str) -> str | None:
    """``value`` if it is ``None`` or a string."""
    if value is not None and not isinstance(value, str):
        raise ArgumentError(f"{name}={value!r}: expected a string such as {example} or None, "
                            f"got {type(value).__name__}")
    return value


def check_execute_arguments(function: Any, random_order: Any, n_jobs: Any, max_experiments: Any) -> bool:
    """The checks of ``PyExperimenter.execute``, made before any experiment is claimed.

    Returns ``random_order`` as a bool. ``execute(fn, -1)`` (an older PyExperimenter's call,
    whose second argument was ``max_experiments``; still in 1.4.2 users' scripts and in
    1.4.2's own tests) passes ``-1`` as ``random_order``: 1.4.2 took it as true and ran every
    experiment in random order, and so do we, with a ``FutureWarning``.
    """
    if function is not None and not callable(function):
        hint = ""
        if isinstance(function, str):
            hint = ("; to name a function by text use "
                    "py_experimenter.function_loader.load_function('module:function')")
        raise ArgumentError(
            f"experiment_function={function!r}: expected a function taking (keyfields, result_processor, "
            f"custom_fields), or None to run Execution.adapter; got {type(function).__name__}{hint}"
        )
    if type(random_order) is int and random_order == -1:
        warnings.warn(
            "execute(experiment_function, -1): the second argument is random_order, not max_experiments; "
            "as in PyExperimenter 1.4.2, -1 runs every experiment in random order. Write "
            "execute(experiment_function, max_experiments=-1) (or random_order=True)",
            FutureWarning, stacklevel=3,
        )
        random_order = True
    check_bool("random_order", random_order)
    positive_int("n_jobs", n_jobs, allow=(None,), meaning="; None uses n_jobs of the experiment file")
    positive_int("max_experiments", max_experiments, allow=(-1,), meaning="; -1 (the default) runs all")
    return bool(random_order)
