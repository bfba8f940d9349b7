"""The ``Execution`` section of an experiment file: :class:`ExecutionSpec` and its parser.

:func:`parse_execution` turns ``PY_EXPERIMENTER.Execution`` into an :class:`ExecutionSpec`;
:func:`override_execution` applies command-line / environment overrides by the same rules.
The generic checks live in :mod:`.config_checker` (``Checker``, ``read_yaml`` and
``type_word`` stay importable from here too); this module does not import :mod:`.config`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, NoReturn

from py_experimenter.config_checker import Checker, read_yaml, type_word
from py_experimenter.exceptions import ConfigError

__all__ = [
    "ADAPTERS", "ISOLATIONS", "Checker", "ExecutionSpec", "override_execution", "parse_execution", "parse_memory",
    "read_yaml", "type_word",
]

ADAPTERS: tuple[str, ...] = ("function", "docker", "command")
ISOLATIONS: tuple[str, ...] = ("inline", "process")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgt])(?:i?b)?$", re.IGNORECASE)
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class ExecutionSpec:
    """``PY_EXPERIMENTER.Execution`` (ours; every key optional)."""

    adapter: Literal["function", "docker", "command"] = "function"
    lease_seconds: float = 120.0
    heartbeat_seconds: float = 30.0
    max_attempts: int = 3
    #: After SIGTERM / SIGINT, how long the running experiment may still finish before it is
    #: handed back (attempt ``interrupted``, row ``created``). A second signal hands back at once.
    grace_seconds: float = 30.0
    #: How long executors keep retrying (with bounded backoff) while the database server is
    #: unreachable before they give up and exit non-zero.
    database_outage_seconds: float = 300.0
    #: How long one experiment usually takes; an executor with a deadline (Slurm's time limit or
    #: ``run --deadline``) claims no experiment that cannot finish before it. Null: estimated
    #: from this table's finished attempts.
    expected_seconds: float | None = None
    isolation: Literal["inline", "process"] = "inline"
    timeout: float | None = None
    memory: str | None = None
    cpus: float | None = None
    gpus: int = 0
    image: str | None = None
    command: tuple[str, ...] | None = None
    #: Environment variables for the container / command; values may use the same
    #: ``{placeholders}`` as ``command``.
    env: Mapping[str, str] | None = None
    #: Docker network mode for containers; ``none`` (no network) unless a study needs one.
    network: str = "none"
    datasets: str | None = None
    results_dir: str | None = None

    @property
    def memory_bytes(self) -> int | None:
        """``memory`` in bytes (``"2g"`` → 2147483648), or None when unlimited."""
        return None if self.memory is None else parse_memory(self.memory)



def parse_memory(text: str) -> int:
    """Bytes in a memory limit written like Docker's: ``"512m"``, ``"2g"``, ``"1.5GiB"``.

    Units are binary (k = 1024). A unit is required: a bare number is almost always a mistake.

    :raises ValueError: the text is not such a size.
    """
    match = _MEMORY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid memory size {text!r}; write a number and a unit, e.g. '512m' or '2g'")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _command(check: Checker, value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            check.fail(path, f"cannot split the command like a shell would: {exc}; or give it as a list")
    if not isinstance(value, (list, tuple)) or not value:
        check.fail(
            path, f"expected a non-empty list of strings (or one command string), got {type_word(value)}"
        )
    for i, part in enumerate(value):
        if not isinstance(part, str):
            check.fail(f"{path}[{i}]", f"expected a string, got {type_word(part)}; quote it in YAML")
    return tuple(value)


def _env(check: Checker, value: Any, path: str) -> dict[str, str]:
    data = check.mapping(value, path, "a mapping of environment variable names to values")
    env: dict[str, str] = {}
    for name, text in data.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            check.fail(f"{path}.{name}", f"invalid environment variable name {name!r}: use letters, digits and _, "
                                         "not starting with a digit")
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            check.fail(f"{path}.{name}", f"expected a string or number, got {type_word(text)}")
        env[name] = str(text)
    return env


def _memory(check: Checker, value: Any, path: str) -> str:
    try:
        parse_memory(value)
    except ValueError as exc:
        check.fail(path, str(exc))
    return str(value).strip()


def _non_negative(check: Checker, value: Any, where: str) -> float:
    number = float(check.real(value, where))
    if number < 0:
        check.fail(where, f"expected a number >= 0, got {value}")
    return number


def parse_execution(check: Checker, raw: Any, path: str) -> ExecutionSpec:
    """Validate ``PY_EXPERIMENTER.Execution`` (every key optional) and return the spec.

    A null value for a key whose default is null (``timeout``, ``memory``, ...) means "none".
    """
    data = check.mapping(raw, path)
    defaults = ExecutionSpec()
    check.keys(data, path, (f.name for f in fields(ExecutionSpec)))

    def positive(value: Any, where: str) -> float:
        return float(check.real(value, where, positive=True))

    parsers: dict[str, Callable[[Any, str], Any]] = {
        "adapter": lambda v, w: check.choice(v, w, ADAPTERS),
        "lease_seconds": positive,
        "heartbeat_seconds": positive,
        "max_attempts": lambda v, w: check.integer(v, w, minimum=1),
        "grace_seconds": lambda v, w: _non_negative(check, v, w),
        "database_outage_seconds": lambda v, w: _non_negative(check, v, w),
        "expected_seconds": positive,
        "isolation": lambda v, w: check.choice(v, w, ISOLATIONS),
        "timeout": positive,
        "memory": lambda v, w: _memory(check, v, w),
        "cpus": positive,
        "gpus": lambda v, w: check.integer(v, w, minimum=0),
        "image": check.string,
        "command": lambda v, w: _command(check, v, w),
        "env": lambda v, w: _env(check, v, w),
        "network": check.string,
        "datasets": check.string,
        "results_dir": check.string,
    }
    values: dict[str, Any] = {}
    for key, value in data.items():
        if value is None and getattr(defaults, key) is None:
            values[key] = None
        else:
            values[key] = parsers[key](value, f"{path}.{key}")
    spec = ExecutionSpec(**values)

    if spec.heartbeat_seconds >= spec.lease_seconds:
        check.fail(
            f"{path}.heartbeat_seconds",
            f"heartbeat_seconds ({spec.heartbeat_seconds:g}) must be less than lease_seconds "
            f"({spec.lease_seconds:g}), or a running experiment loses its lease between two heartbeats; "
            "about a quarter of the lease is a good value",
        )
    if spec.adapter == "function" and spec.isolation == "inline":
        for key in ("timeout", "memory"):
            if getattr(spec, key) is not None:
                check.fail(
                    f"{path}.{key}",
                    f"{key} needs the experiment in its own process: add isolation: process (a function "
                    "running inline in the executor cannot be stopped or limited safely)",
                )
    if spec.adapter == "docker" and spec.image is None:
        check.fail(f"{path}.image", "adapter 'docker' needs an image, e.g. image: python:3.12-slim")
    if spec.adapter == "command" and spec.command is None:
        check.fail(
            f"{path}.command", "adapter 'command' needs a command, e.g. command: [python, run.py, '{seed}']"
        )
    return spec


_OVERRIDE_PATH = "Execution"
#: Keys whose text (from a command line or environment variable) is read as a number.
_NUMERIC_KEYS = frozenset(
    {"lease_seconds", "heartbeat_seconds", "max_attempts", "grace_seconds", "database_outage_seconds",
     "expected_seconds", "timeout", "cpus", "gpus"}
)


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


class _OptionChecker(Checker):
    """A :class:`Checker` whose errors name command-line options (``--heartbeat-seconds``)."""

    def __init__(self, source: str, given: Iterable[str]) -> None:
        super().__init__(source)
        self.given = tuple(given)

    def fail(self, path: str, message: str, cls: type[ConfigError] = ConfigError) -> NoReturn:
        key = re.split(r"[.\[]", path.removeprefix(_OVERRIDE_PATH + "."), maxsplit=1)[0] if path else ""
        # A rule broken by a value from the file together with an override (heartbeat >= lease)
        # names the overriding option(s): that is what the user just typed.
        names = [key] if key in self.given else list(self.given)
        raise cls(message, source=self.source, key_path=", ".join(map(_option, names)) or None)


def override_execution(spec: ExecutionSpec, source: str, **values: Any) -> ExecutionSpec:
    """``spec`` with the given ``Execution`` keys replaced, validated by the file's rules.

    Values that are None are ignored (not given). Text for numeric keys (``"60"``, as it comes
    from a command line or environment variable) is read as a number. The merged settings go
    through :func:`parse_execution`, so every rule of the experiment file applies (positive
    numbers, ``heartbeat_seconds < lease_seconds``, memory sizes such as ``"2g"``, ...).

    :param spec: the settings from the experiment file.
    :param source: where the values come from, for error messages (e.g. ``"command line"``).
    :param values: ``Execution`` keys, e.g. ``lease_seconds=600``.
    :raises ConfigError: a value breaks a rule; the key path is the option (``--heartbeat-seconds``).
    """
    given = {key: value for key, value in values.items() if value is not None}
    check = _OptionChecker(source, given)
    for key, value in given.items():
        if key in _NUMERIC_KEYS and isinstance(value, str):
            given[key] = _number(check, value, key)
    merged = {f.name: getattr(spec, f.name) for f in fields(spec)}
    merged.update(given)
    return parse_execution(check, merged, _OVERRIDE_PATH)


def _number(check: Checker, text: str, key: str) -> int | float:
    for kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            continue
    check.fail(f"{_OVERRIDE_PATH}.{key}", f"expected a number, got {text!r}")
