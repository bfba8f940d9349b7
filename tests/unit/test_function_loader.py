"""``--function`` loading: files by path under their own module names, importable modules as usual."""

from __future__ import annotations

import json
import queue
import sys
from pathlib import Path

import pytest

from py_experimenter.exceptions import ConfigError, FunctionLoadError
from py_experimenter.function_loader import load_function


def test_a_file_named_like_a_stdlib_module_is_loaded_from_its_path(tmp_path: Path):
    (tmp_path / "queue.py").write_text("def run(k, r, c):\n    return 'mine'\n")
    function = load_function(f"{tmp_path / 'queue.py'}:run")
    assert function(None, None, None) == "mine"
    assert sys.modules["queue"] is queue and not hasattr(queue, "run")  # the standard library is untouched
    assert sys.path.index(str(tmp_path)) > sys.path.index(str(Path(queue.__file__).parent))
    assert function.__module__.startswith("py_experimenter_fn_queue_")


def test_two_files_with_one_name_stay_apart(tmp_path: Path):
    for folder, value in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "exp.py").write_text(f"def run(k, r, c):\n    return {value}\n")
    first = load_function(f"{tmp_path / 'a' / 'exp.py'}:run")
    second = load_function(f"{tmp_path / 'b' / 'exp.py'}:run")
    assert (first(0, 0, 0), second(0, 0, 0)) == (1, 2)


def test_a_file_can_import_its_neighbours(tmp_path: Path):
    (tmp_path / "helpers_x1.py").write_text("VALUE = 7\n")
    (tmp_path / "main_x1.py").write_text("import helpers_x1\n\ndef run(k, r, c):\n    return helpers_x1.VALUE\n")
    assert load_function(f"{tmp_path / 'main_x1.py'}:run")(0, 0, 0) == 7


def test_importable_modules_keep_working():
    assert load_function("json:dumps") is json.dumps
    assert load_function("os.path:join") is __import__("os").path.join


@pytest.mark.parametrize(("source", "spec", "message"), [
    (None, "{dir}/nope.py:run", "does not exist"),
    ("def run(:\n", "{dir}/syntax.py:run", "SyntaxError at "),
    ("raise RuntimeError('boom at import')\n", "{dir}/raises.py:run", "RuntimeError: boom at import"),
    ("def run(k, r, c):\n    pass\n", "{dir}/attr.py:walk", "has no attribute 'walk'; its callables are ['run']"),
    ("run = 3\n", "{dir}/value.py:run", "'run' in "),
    (None, "no_such_module_zz:run", "no module named 'no_such_module_zz'"),
    (None, "run", "expected MODULE:CALLABLE"),
    (None, "json:", "expected MODULE:CALLABLE"),
])
def test_failures_name_the_argument_and_the_reason(tmp_path: Path, source, spec, message):
    text = spec.format(dir=tmp_path)
    if source is not None:
        Path(text.rpartition(":")[0]).write_text(source)
    with pytest.raises(FunctionLoadError) as caught:
        load_function(text)
    assert str(caught.value).startswith(f"--function {text!r}: ") and message in str(caught.value)
    assert isinstance(caught.value, ConfigError) and "\n" not in str(caught.value)
