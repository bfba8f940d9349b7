"""The generic checks of our YAML files: safe reading and validation steps with key paths.

:func:`read_yaml` reads a file safely (a key given twice is an error, not silently dropped);
:class:`Checker` holds the validation steps (mapping, keys, numbers, choices) that raise
:class:`~py_experimenter.exceptions.ConfigError` naming the file and the key path. Every
section parser (:mod:`.config`, :mod:`.config_execution`) builds on these; this module imports
none of them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any, NoReturn

import yaml

from py_experimenter.exceptions import ConfigError

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
