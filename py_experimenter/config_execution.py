"""The ``Execution`` section of an experiment file, and the helpers shared with :mod:`.config`.

:func:`read_yaml` reads a file safely (a duplicated key is an error, not silently dropped);
:class:`Checker` holds the generic validation steps (mapping, keys, numbers, choices) that
raise :class:`~py_experimenter.exceptions.ConfigError` with the file and the key path;
:func:`parse_execution` turns ``PY_EXPERIMENTER.Execution`` into an ``ExecutionSpec``.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from datetime import date
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

from py_experimenter.exceptions import ConfigError

if TYPE_CHECKING:
    from py_experimenter.config import ExecutionSpec

ADAPTERS: tuple[str, ...] = ("function", "docker", "command")
ISOLATIONS: tuple[str, ...] = ("inline", "process")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgt])(?:i?b)?$", re.IGNORECASE)
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

_TYPE_WORDS = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "nothing (null)",
    date: "a date",
}


def type_word(value: Any) -> str:
    """How an error message names the YAML type of ``value`` ("a list", "a string")."""
    return next((w for t, w in _TYPE_WORDS.items() if type(value) is t), type(value).__name__)


def _suggest(key: str, valid: tuple[str, ...]) -> str:
    """Suggest the valid key closest to ``key`` (exact case first): "did you mean 'x'? " or ""."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not close:
        lowered: dict[str, str] = {}
        for name in valid:
            lowered.setdefault(name.lower(), name)
        close = [lowered[c] for c in difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)]
    if not close:  # "lease" for "lease_seconds"
        close = [name for name in valid if name.lower().startswith(key.lower())][:1]
    return f"did you mean {close[0]!r}? " if close else ""


class Checker:
    """Validation helpers that raise :class:`ConfigError` naming the file and the key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str, cls: type[ConfigError] = ConfigError) -> NoReturn:
        """Raise ``cls`` for the key at ``path``."""
        raise cls(message, source=self.source, key_path=path or None)

    def mapping(
        self, value: Any, path: str, expected: str = "a mapping (key: value lines)"
    ) -> dict[Any, Any]:
        """Return ``value`` as a dict (None → empty); anything else is an error."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"expected {expected}, got {type_word(value)}")
        return dict(value)

    def keys(
        self,
        data: Mapping[Any, Any],
        path: str,
        valid: Iterable[str],
        required: Iterable[str] = (),
        hints: Mapping[str, str] | None = None,
    ) -> None:
        """Reject keys not in ``valid`` (suggesting the closest) and missing ``required`` keys."""
        valid = tuple(valid)
        for key in data:
            if key in valid:
                continue
            where = f"{path}.{key}" if path else str(key)
            hint = (hints or {}).get(str(key)) or _suggest(str(key), valid)
            self.fail(where, f"unknown key {str(key)!r}; {hint}valid keys here: {', '.join(valid)}")
        for key in required:
            if key not in data:
                self.fail(
                    f"{path}.{key}" if path else key,
                    f"missing required key {key!r} under {path or 'the root'}",
                )

    def integer(self, value: Any, path: str, minimum: int) -> int:
        """An int (not a bool) of at least ``minimum``."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer >= {minimum}, got {type_word(value)}")
        if value < minimum:
            self.fail(path, f"expected an integer >= {minimum}, got {value}")
        return value

    def real(self, value: Any, path: str, *, positive: bool = False) -> int | float:
        """A finite int or float (not a bool); ``positive`` requires > 0."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(
                path, f"expected a number, got {type_word(value) if not isinstance(value, float) else value}"
            )
        if positive and value <= 0:
            self.fail(path, f"expected a number > 0, got {value}")
        return value

    def string(self, value: Any, path: str) -> str:
        """A non-empty string."""
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"expected a non-empty string, got {type_word(value)}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        """``true`` or ``false``."""
        if not isinstance(value, bool):
            self.fail(path, f"expected true or false, got {type_word(value)} {value!r}")
        return value

    def choice(
        self, value: Any, path: str, choices: Iterable[str], aliases: Mapping[str, str] | None = None
    ) -> str:
        """One of ``choices`` (case-insensitive); ``aliases`` maps other spellings onto them."""
        choices = tuple(choices)
        if isinstance(value, str):
            text = (aliases or {}).get(value.lower(), value.lower())
            if text in choices:
                return text
        self.fail(path, f"expected one of {', '.join(choices)}; got {value!r}")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping (PyYAML keeps the last)."""


def _no_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark
            )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def read_yaml(source: str, what: str) -> Any:
    """Parse the YAML file ``source`` (safely; a key given twice is an error).

    :raises ConfigError: the file is missing or unreadable, or the YAML is invalid (with line
        and column).
    """
    try:
        with open(source, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_StrictLoader)  # a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"{what} not found; check the path", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {exc.strerror}", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} is not UTF-8 text", source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ConfigError(f"YAML syntax error{where}: {detail}", source=source) from None


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
    from py_experimenter.config import ExecutionSpec

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
     "timeout", "cpus", "gpus"}
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
