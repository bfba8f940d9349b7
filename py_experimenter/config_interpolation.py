"""OmegaConf interpolation (``${...}``) in experiment files, as PyExperimenter 1.4.2 resolved it.

An experiment file may refer to other keys (``database: ${PY_EXPERIMENTER.Database.table.name}_db``,
``values: ${PY_EXPERIMENTER.Custom.datasets}``, relative ``${.sibling}``), to environment
variables (``${oc.env:USER}``, ``${oc.env:DB,fallback}``) and to OmegaConf's other resolvers.
:func:`resolve_interpolations` resolves them after the YAML is read and before the file is
checked; a Hydra / OmegaConf ``DictConfig`` is turned into plain data the same way.

Everything else is left as it is: YAML anchors and merge keys (resolved by the YAML reader),
``{start, stop, step}`` ranges, strings with a ``$`` that does not open ``${``, and the
``{placeholder}`` templates of ``Execution.command``. A literal ``${`` (a shell variable in a
command, say) is written ``\\${``, as in OmegaConf.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from py_experimenter.exceptions import ConfigError

_OPEN = "${"
_BUILTIN_RESOLVERS = "oc.env, oc.decode, oc.select, oc.create, oc.dict.keys, oc.dict.values"
_REFERENCE_RULE = (
    "paths are absolute from the top of the file (${PY_EXPERIMENTER.Custom.datasets}) or relative "
    "with a leading dot (${.other_key})"
)


def is_omegaconf(data: Any) -> bool:
    """True for an OmegaConf ``DictConfig`` / ``ListConfig`` (without importing omegaconf)."""
    return type(data).__module__.split(".")[0] == "omegaconf"


def _strings(data: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(key path, text)`` of every string value, key paths written as OmegaConf writes them."""
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, Mapping):
        for key, value in data.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            yield from _strings(value, f"{path}[{i}]")


def has_interpolation(data: Any) -> bool:
    """True when some string value of ``data`` contains ``${``."""
    return any(_OPEN in text for _, text in _strings(data))


def resolve_interpolations(data: Any, source: str) -> Any:
    """``data`` with every ``${...}`` resolved, as plain dicts, lists and scalars.

    ``data`` is what the YAML reader returned, or an OmegaConf container (a Hydra config).
    Data without ``${`` is returned unchanged.

    :raises ConfigError: an interpolation cannot be resolved (missing key, cycle, unknown
        resolver, unset environment variable, bad syntax); the message names ``source``, the
        key path, the interpolation, why, and how to fix it.
    """
    if is_omegaconf(data):
        return _from_omegaconf(data, source)
    if not has_interpolation(data):
        return data
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    bad = _unusable_key(data)
    if bad is not None:
        path, key = bad
        raise ConfigError(
            f"the key {key!r} (YAML read it as {type(key).__name__}) cannot be used in a file with ${{...}} "
            "interpolations, whose keys must be strings or numbers; quote it",
            source=source,
            key_path=path,
        )
    try:
        config = OmegaConf.create(data, flags={"allow_objects": True})  # dates stay dates
    except OmegaConfBaseException as exc:  # e.g. a syntax error found while reading
        raise _error(exc, data, source) from None
    return _resolve(config, data, source)


def _unusable_key(data: Any, path: str = "") -> tuple[str, Any] | None:
    """``(key path, key)`` of the first mapping key OmegaConf cannot hold (null, a date)."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, (str, int, float)):
                return where, key
            found = _unusable_key(value, where)
            if found is not None:
                return found
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            found = _unusable_key(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _from_omegaconf(config: Any, source: str) -> Any:
    """Plain data from a Hydra / OmegaConf config.

    A config that holds ``PY_EXPERIMENTER`` among the application's own keys (a Hydra app's
    ``cfg``), or the ``cfg.PY_EXPERIMENTER`` node itself, gives ``{"PY_EXPERIMENTER": ...}``:
    only that part is resolved (``${hydra:...}`` elsewhere needs a running Hydra app), still
    against the whole config, so ``${study}`` may name an application key.
    """
    from omegaconf import DictConfig, OmegaConf

    root = "PY_EXPERIMENTER"
    node = None
    if isinstance(config, DictConfig) and root in config and len(config) > 1:
        node = config._get_node(root)
    elif isinstance(config, DictConfig) and config._get_parent() is not None and config._key() == root:
        node = config
    if node is None:
        return _resolve(config, OmegaConf.to_container(config, resolve=False), source)
    raw = {root: OmegaConf.to_container(node, resolve=False)}
    return {root: _resolve(node, raw, source)}


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "msg", None) or str(exc)
    return str(text).splitlines()[0] if text else type(exc).__name__


def _resolve(config: Any, raw: Any, source: str) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as exc:
        raise _error(exc, raw, source) from None


def _error(exc: BaseException, raw: Any, source: str) -> ConfigError:
    """The :class:`ConfigError` for an OmegaConf error: key path, the interpolation, why, fix."""
    key = getattr(exc, "full_key", None) or None
    text = next((t for p, t in _strings(raw) if p == key), None)
    shown = f"the interpolation {text!r}" if text is not None else "an interpolation"
    return ConfigError(f"cannot resolve {shown}: {_why(exc)}", source=source, key_path=key)


def _why(exc: BaseException) -> str:
    """What went wrong and how to fix it, by the kind of OmegaConf error."""
    from omegaconf import errors

    reason = _first_line(exc)
    escape = "to keep a literal ${...} (e.g. a shell variable) write \\${...}"
    if isinstance(exc, errors.InterpolationKeyError):
        return f"{reason}; check the spelling of the key it refers to: {_REFERENCE_RULE}; {escape}"
    if isinstance(exc, errors.UnsupportedInterpolationType):
        return f"{reason}: no such resolver; the built-in ones are {_BUILTIN_RESOLVERS}; {escape}"
    if isinstance(exc, errors.InterpolationToMissingValueError):
        return f"{reason}; give the referred key a value instead of ???"
    if isinstance(exc, errors.GrammarParseError):
        return f"{reason}: not a valid interpolation; {escape}"
    unset = re.search(r"Environment variable '([^']*)' not found", reason)
    if unset:
        name = unset.group(1)
        return (
            f"the environment variable {name!r} is not set; set it, or give a default: "
            f"${{oc.env:{name},default}}"
        )
    if "Recursive interpolation" in reason or "parent node" in reason:
        return f"{reason}: the interpolations refer to each other in a cycle; make one of them a plain value"
    return f"{reason}; {_REFERENCE_RULE}"
