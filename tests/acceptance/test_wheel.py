"""The built wheel is complete: installed on its own it runs the README's example and the CLI.

`pip wheel .` builds it; it is unpacked into a fresh directory that is put first on the path,
so the imports below come from the wheel, not from the repository's editable install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=240,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("py_experimenter-*.whl")
    return path


def test_wheel_holds_the_package_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top - {"hydra_plugins"} == {"py_experimenter", next(t for t in top if t.endswith(".dist-info"))}, top
    assert not top & {"tests", "scripts", "docs", "config"}, top
    plugin_dir = ROOT / "py_experimenter" / "hydra_plugin"
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "py_experimenter").rglob("*.py")
               if plugin_dir not in path.parents}
    assert sources <= set(names), sorted(sources - set(names))  # every package folder is in pyproject's list
    # the plugin is written in py_experimenter/hydra_plugin/ and installed under Hydra's namespace only
    plugin = {"hydra_plugins/py_experimenter_launcher/" + path.relative_to(plugin_dir).as_posix()
              for path in plugin_dir.rglob("*.py")}
    assert plugin and plugin <= set(names), sorted(plugin - set(names))
    assert not any(name.startswith("py_experimenter/hydra_plugin/") for name in names)
    assert "hydra_plugins/__init__.py" not in names  # Hydra's namespace package stays one
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "py-experimenter = py_experimenter.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs_the_example(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    work = tmp_path / "work"
    shutil.copytree(ROOT / "config", work / "config")
    shutil.copy(ROOT / "docs" / "examples" / "quickstart.py", work / "quickstart.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PY_EXPERIMENTER_")}
    env["PYTHONPATH"] = str(site)
    where = subprocess.run([sys.executable, "-c", "import py_experimenter; print(py_experimenter.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    done = subprocess.run([sys.executable, "quickstart.py"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr
    assert done.stdout.count(" done ") == 30, done.stdout
    status = subprocess.run([sys.executable, "-m", "py_experimenter.cli", "status", "config/example_sqlite.yml"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "done" in status.stdout and "30" in status.stdout


FIND_PLUGIN = """
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
import hydra_plugins.py_experimenter_launcher.launcher as plugin
names = [f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Launcher)]
print(plugin.__file__)
print("found" if "hydra_plugins.py_experimenter_launcher.launcher.PyExperimenterLauncher" in names else names)
"""


def test_hydra_finds_the_launcher_plugin_of_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra", reason="hydra-core is in the test extra")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PY_EXPERIMENTER_")}, "PYTHONPATH": str(site)}
    found = subprocess.run([sys.executable, "-c", FIND_PLUGIN], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
    assert found.returncode == 0, found.stderr[-3000:]
    where, verdict = found.stdout.split()
    assert where.startswith(str(site)) and verdict == "found", found.stdout
