"""Load an experiment function named as ``MODULE:CALLABLE`` or ``path/to/file.py:CALLABLE``.

A file is loaded by its path under a module name of its own (``py_experimenter_fn_<stem>_<hash>``),
so ``queue.py:run`` or ``json.py:run`` loads that file, never the standard library's module of
the same name; its folder is appended to ``sys.path`` so that it can import its neighbours. A
dotted name (``mypackage.experiments:run``) is imported as usual, with the current folder on
``sys.path`` as ``python -m`` would have it. Executor processes are forked
(:mod:`py_experimenter.processes`), so they inherit the loaded module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from py_experimenter.exceptions import FunctionLoadError

__all__ = ["load_function"]

_FORM = "expected MODULE:CALLABLE (e.g. mypackage.experiments:run) or path/to/file.py:CALLABLE"


def load_function(spec: str, *, option: str = "--function") -> Callable[..., Any]:
    """The callable that ``spec`` names.

    :param spec: ``MODULE:CALLABLE`` or ``path/to/file.py:CALLABLE``.
    :param option: how the caller calls this argument in messages.
    :raises FunctionLoadError: malformed spec, missing file or module, an error while
        importing it (syntax error included: file and line are named), no such attribute,
        or an attribute that is not callable.
    """
    source, sep, attribute = str(spec).rpartition(":")
    if not sep or not source or not attribute or not attribute.replace(".", "_").isidentifier():
        raise FunctionLoadError(f"{option} {spec!r}: {_FORM}")
    if source.endswith(".py") or "/" in source or os.sep in source:
        module = _load_file(spec, source, option)
    else:
        module = _import(spec, source, option)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(name for name, value in vars(module).items()
                            if callable(value) and not name.startswith("_"))
            raise FunctionLoadError(
                f"{option} {spec!r}: {source!r} has no attribute {attribute!r}; its callables are {public}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise FunctionLoadError(
            f"{option} {spec!r}: {attribute!r} in {source!r} is a {type(target).__name__}, not a function; "
            "name a function taking (keyfields, result_processor, custom_fields)"
        )
    return target


def _load_file(spec: str, source: str, option: str) -> Any:
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise FunctionLoadError(f"{option} {spec!r}: file {str(path)!r} does not exist")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"py_experimenter_fn_{_identifier(path.stem)}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise FunctionLoadError(f"{option} {spec!r}: {str(path)!r} cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    folder = str(path.parent)
    if folder not in sys.path:
        # The file may import its neighbours; appended, so that a neighbour named like a
        # standard-library or installed module (queue.py) never shadows it for anyone else.
        sys.path.append(folder)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as err:
        del sys.modules[name]
        if isinstance(err, KeyboardInterrupt):
            raise
        raise FunctionLoadError(f"{option} {spec!r}: loading {str(path)!r} failed: {_describe(err)}") from err
    return module


def _import(spec: str, source: str, option: str) -> Any:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as err:
        if err.name is not None and source.startswith(err.name):
            raise FunctionLoadError(
                f"{option} {spec!r}: no module named {source!r} (run from the folder that contains it, "
                "or give the file: path/to/file.py:CALLABLE)"
            ) from None
        raise FunctionLoadError(f"{option} {spec!r}: importing {source!r} failed: {_describe(err)}") from err
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt):
            raise
        raise FunctionLoadError(f"{option} {spec!r}: importing {source!r} failed: {_describe(err)}") from err


def _describe(err: BaseException) -> str:
    if isinstance(err, SyntaxError):
        return f"{type(err).__name__} at {err.filename}:{err.lineno}: {err.msg}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _identifier(stem: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in stem)
    return cleaned or "module"
