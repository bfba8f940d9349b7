"""CodeCarbon emissions per attempt in ``<table>_codecarbon``, on every backend, with the real
codecarbon package (offline): real figures, fenced to the attempt, failures never fail a row,
no table when CodeCarbon is off."""

from __future__ import annotations

import logging
import platform
import sys
import threading
import time
from typing import Any, ClassVar

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from py_experimenter.db.schema import CODECARBON_COLUMNS

codecarbon = pytest.importorskip("codecarbon", reason="the codecarbon extra is not installed")

KEYFIELDS = {"seed": {"type": "INT", "values": [1, 2]}}
FAST = {"lease_seconds": 10, "heartbeat_seconds": 0.5}


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first warning of each cause (they are once per process otherwise)."""
    monkeypatch.setattr("py_experimenter.emissions._warned", set())


def _busy(seconds: float) -> None:
    """Burn CPU for ``seconds`` (something to measure)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(i * i for i in range(1000))


def busy_experiment(keyfields: dict[str, Any], result_processor: Any, custom: dict[str, Any]) -> None:
    _busy(0.3)
    result_processor.process_results({"score": float(keyfields["seed"])})


def _table_names(exp: Any) -> set[str]:
    with exp.db.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def _cc_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "py-experimenter" and "codecarbon" in r.getMessage().lower()]


def _assert_plausible(row: Any, main_row: Any, *, min_duration: float) -> None:
    assert row["attempt"] == main_row["attempt"]
    assert row["duration_seconds"] >= min_duration
    assert row["emissions_kg"] >= 0 and row["emissions_rate_kg_sec"] >= 0
    for column in ("cpu_energy_kw", "gpu_energy_kw", "ram_energy_kw", "cpu_power_watt", "ram_power_watt"):
        assert row[column] >= 0, column
    assert row["energy_consumed_kw"] > 0
    parts = row["cpu_energy_kw"] + row["gpu_energy_kw"] + row["ram_energy_kw"]
    assert row["energy_consumed_kw"] == pytest.approx(parts, rel=1e-6)
    # Offline, with the default country: emissions follow from the energy and USA's grid mix.
    assert row["country_iso_code"] == "USA" and row["country_name"] == "United States"
    assert row["emissions_kg"] > 0
    assert row["codecarbon_version"] == codecarbon.__version__
    assert row["python_version"] == platform.python_version()
    assert row["cpu_count"] >= 1 and row["ram_total_size"] > 0
    assert row["tracking_mode"] == "machine" and row["on_cloud"] == "N"
    assert row["power_usage_efficiency"] == 1.0
    assert bool(row["offline_mode"]) is True
    assert row["run_id"] and row["project_name"] == "codecarbon"
    # Stored on the database clock while the attempt ran, before the row was finished
    # (MySQL's DATETIME of 1.4.2's column rounds to whole seconds).
    second = pd.Timedelta(seconds=1)
    assert main_row["start_date"] - second <= row["codecarbon_timestamp"] <= main_row["end_date"] + second


def test_emissions_recorded_per_experiment_with_real_figures(make_experimenter, backend):
    exp = make_experimenter(KEYFIELDS, {"score": "FLOAT"}, use_codecarbon=True, Execution=FAST)
    exp.fill_table_from_config()
    assert f"{exp.config.table.name}_codecarbon" in _table_names(exp)
    assert exp.execute(busy_experiment) == 2
    table = exp.get_table().set_index("ID")
    assert set(table["status"]) == {"done"}
    emissions = exp.get_codecarbon_table()
    # PyExperimenter 1.4.2's columns, in its order, then the attempt.
    assert list(emissions.columns) == ["ID", "experiment_id", *(n for n, _ in CODECARBON_COLUMNS), "attempt"]
    assert sorted(emissions["experiment_id"]) == sorted(table.index)
    for _, row in emissions.iterrows():
        _assert_plausible(row, table.loc[row["experiment_id"]], min_duration=0.25)


def test_emissions_with_isolated_children(make_experimenter, backend):
    exp = make_experimenter({"seed": {"type": "INT", "values": [1]}}, {"score": "FLOAT"}, use_codecarbon=True,
                            Execution={**FAST, "isolation": "process"})
    exp.fill_table_from_config()
    assert exp.execute(busy_experiment) == 1
    main_row = exp.get_table().iloc[0]
    assert main_row["status"] == "done"
    emissions = exp.get_codecarbon_table()
    assert len(emissions) == 1
    _assert_plausible(emissions.iloc[0], main_row, min_duration=0.25)


def test_no_codecarbon_table_when_off(make_experimenter, backend):
    exp = make_experimenter(KEYFIELDS, {"score": "FLOAT"}, use_codecarbon=False)
    exp.fill_table_from_config()
    assert exp.execute(busy_experiment) == 2
    name = f"{exp.config.table.name}_codecarbon"
    assert exp.config.table.name in _table_names(exp) and name not in _table_names(exp)
    empty = exp.get_codecarbon_table()
    assert empty.empty and "duration_seconds" in empty.columns and "attempt" in empty.columns
    assert name not in _table_names(exp)


@pytest.mark.parametrize("section", [True, False], ids=["CodeCarbon-section", "no-section"])
def test_no_codecarbon_table_when_not_installed(make_experimenter, monkeypatch, recwarn, section):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import codecarbon now raises ImportError
    monkeypatch.setattr("py_experimenter.emissions._not_installed_warned", False)
    extra = {"CodeCarbon": {"offline_mode": True}} if section else {}
    exp = make_experimenter(KEYFIELDS, {"score": "FLOAT"}, use_codecarbon=True, **extra)
    assert exp.use_codecarbon is False
    warned = [str(w.message) for w in recwarn if "codecarbon" in str(w.message)]
    if section:  # the user asked for CodeCarbon: say once that it is missing
        assert len(warned) == 1 and warned[0].startswith("use_codecarbon is on but codecarbon is not installed")
    else:  # a fresh install without the extra runs quietly
        assert warned == []
    exp.fill_table_from_config()
    assert exp.execute(busy_experiment) == 2
    assert f"{exp.config.table.name}_codecarbon" not in _table_names(exp)
    assert exp.get_codecarbon_table().empty


def test_fenced_out_attempt_stores_no_emissions(make_experimenter, backend):
    exp = make_experimenter(KEYFIELDS, {"score": "FLOAT"}, use_codecarbon=True, Execution=FAST)
    exp.fill_table_from_config()
    runs: list[int] = []

    def reset_midway(keyfields, result_processor, custom):
        runs.append(keyfields["seed"])
        _busy(0.1)
        if keyfields["seed"] == 1 and runs.count(1) == 1:
            # Another user resets the running experiment: this attempt is fenced out, the
            # row goes back to 'created' and is claimed again as attempt 2.
            assert exp.reset_experiments("running", where="seed = 1") == 1

    exp.execute(reset_midway)
    assert runs == [1, 1, 2]
    table = exp.get_table().set_index("seed")
    assert set(table["status"]) == {"done"}
    assert table.loc[1, "attempt"] == 2 and table.loc[2, "attempt"] == 1
    emissions = exp.get_codecarbon_table()
    stored = sorted(zip(emissions["experiment_id"], emissions["attempt"], strict=True))
    # Attempt 1 of seed 1 was replaced while it ran: only its second attempt has figures.
    assert stored == sorted([(table.loc[1, "ID"], 2), (table.loc[2, "ID"], 1)])


class _Broken:
    """A CodeCarbon tracker class that fails in one place (``where``)."""

    where = "init"

    def __init__(self, **options: Any):
        if self.where == "init":
            raise RuntimeError("tracker construction failed")

    def start_task(self, task_name: str | None = None) -> None:
        if self.where == "start":
            raise RuntimeError("tracker start failed")

    def stop_task(self, task_name: str | None = None) -> Any:
        if self.where == "stop":
            raise RuntimeError("tracker stop failed")
        return None  # what codecarbon 3 returns when it lost the task

    def stop(self) -> None:
        pass


@pytest.mark.parametrize("where", ["init", "start", "stop", "no-data"])
def test_failing_tracker_never_fails_the_row(make_experimenter, monkeypatch, caplog, where):
    broken = type("Broken", (_Broken,), {"where": where})
    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", broken)
    exp = make_experimenter(KEYFIELDS, {"score": "FLOAT"}, use_codecarbon=True, Execution=FAST)
    exp.fill_table_from_config()
    with caplog.at_level(logging.WARNING, logger="py-experimenter"):
        assert exp.execute(busy_experiment) == 2
    assert set(exp.get_table()["status"]) == {"done"}
    assert exp.get_codecarbon_table().empty
    messages = _cc_warnings(caplog)
    assert len(messages) == 1, messages  # once per process and cause, not once per experiment
    expected = {"init": "tracker construction failed", "start": "tracker start failed",
                "stop": "tracker stop failed", "no-data": "returned no emissions data"}[where]
    assert expected in messages[0]


def test_output_dir_that_cannot_be_made_never_fails_the_row(make_experimenter, backend, caplog):
    blocker = backend.workdir / "a-file"
    blocker.write_text("not a folder")
    exp = make_experimenter(KEYFIELDS, {"score": "FLOAT"}, use_codecarbon=True, Execution=FAST,
                            CodeCarbon={"save_to_file": True, "output_dir": str(blocker / "emissions")})
    exp.fill_table_from_config()
    with caplog.at_level(logging.WARNING, logger="py-experimenter"):
        assert exp.execute(busy_experiment) == 2
    assert set(exp.get_table()["status"]) == {"done"}
    assert exp.get_codecarbon_table().empty
    messages = _cc_warnings(caplog)
    assert len(messages) == 1 and "could not be created" in messages[0] and "output_dir" in messages[0]


def test_codecarbon_section_keys_are_honoured(make_experimenter, backend, caplog):
    out = backend.workdir / "cc-out"
    exp = make_experimenter({"seed": {"type": "INT", "values": [1]}}, {"score": "FLOAT"}, use_codecarbon=True,
                            Execution=FAST,
                            CodeCarbon={"offline_mode": True, "country_iso_code": "FRA", "measure_power_secs": 1,
                                        "project_name": "pe-test", "log_level": "error", "save_to_file": True,
                                        "output_dir": str(out), "tracking_mode": "machine", "pue": 1.5,
                                        "no_such_key": 1})
    exp.fill_table_from_config()
    with caplog.at_level(logging.WARNING, logger="py-experimenter"):
        assert exp.execute(busy_experiment) == 1
    row = exp.get_codecarbon_table().iloc[0]
    assert row["country_iso_code"] == "FRA" and row["country_name"] == "France"
    assert row["project_name"] == "pe-test" and row["power_usage_efficiency"] == 1.5
    assert row["duration_seconds"] > 0.25 and row["energy_consumed_kw"] > 0
    assert out.is_dir() and list(out.glob("*.csv"))  # save_to_file wrote CodeCarbon's own CSV
    messages = _cc_warnings(caplog)
    assert len(messages) == 1 and "no_such_key" in messages[0] and "country_iso_code" in messages[0]


def test_unstorable_insert_never_fails_the_row(make_experimenter, backend, caplog):
    """The codecarbon table disappears while an experiment runs: the insert fails for real."""
    exp = make_experimenter({"seed": {"type": "INT", "values": [1]}}, {"score": "FLOAT"}, use_codecarbon=True,
                            Execution=FAST)
    exp.fill_table_from_config()
    name = exp.db.schema.codecarbon.name

    def drop_the_table(keyfields, result_processor, custom):
        with exp.db.begin() as conn:
            exp.db.schema.codecarbon.drop(conn)
        result_processor.process_results({"score": 1.0})

    with caplog.at_level(logging.WARNING, logger="py-experimenter"):
        assert exp.execute(drop_the_table) == 1
    assert exp.get_table().iloc[0]["status"] == "done"
    messages = _cc_warnings(caplog)
    assert len(messages) == 1 and "could not be stored" in messages[0] and name in messages[0]


class _OddValues:
    """A tracker whose figures do not fit the columns: not finite, too long, not a number."""

    def __init__(self, **options: Any):
        pass

    def start_task(self, task_name: str | None = None) -> None:
        pass

    def stop_task(self, task_name: str | None = None) -> dict[str, Any]:
        return {"duration": float("nan"), "emissions": float("inf"), "energy_consumed": 0.5,
                "project_name": "p" * 1000, "cpu_count": "two", "country_iso_code": "", "gpu_count": None,
                "longitude": 8.75, "on_cloud": "N", "pue": "1.25"}

    def stop(self) -> None:
        pass


def test_values_the_columns_cannot_hold_become_null_or_are_cut(make_experimenter, monkeypatch, caplog):
    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", _OddValues)
    exp = make_experimenter({"seed": {"type": "INT", "values": [1]}}, {"score": "FLOAT"}, use_codecarbon=True,
                            Execution=FAST)
    exp.fill_table_from_config()
    with caplog.at_level(logging.WARNING, logger="py-experimenter"):
        assert exp.execute(busy_experiment) == 1
    assert exp.get_table().iloc[0]["status"] == "done"
    assert _cc_warnings(caplog) == []
    row = exp.get_codecarbon_table().iloc[0]
    assert pd.isna(row["duration_seconds"]) and pd.isna(row["emissions_kg"]) and pd.isna(row["cpu_count"])
    assert pd.isna(row["country_iso_code"]) and pd.isna(row["gpu_count"])
    assert row["energy_consumed_kw"] == 0.5 and row["power_usage_efficiency"] == 1.25
    assert row["project_name"] == "p" * 255 and row["longitude"] == "8.75" and row["on_cloud"] == "N"
    assert row["attempt"] == 1


def _cli_config(tmp_path: Any, name: str, section: dict[str, Any] | None) -> str:
    from tests.conftest import experiment_yaml

    extra = {"CodeCarbon": section} if section is not None else {}
    data = experiment_yaml("sqlite", name, {"seed": {"type": "INT", "values": [1]}}, {"score": "FLOAT"}, **extra)
    data["PY_EXPERIMENTER"]["Database"]["database"] = str(tmp_path / name)
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.mark.parametrize(("section", "flag", "tracked"), [
    ({"measure_power_secs": 5}, None, True),
    ({"measure_power_secs": 5}, "--no-codecarbon", False),
    ({}, None, True),  # an empty section still asks for tracking
    (None, None, False),
    (None, "--codecarbon", True),
])
def test_cli_run_tracks_when_the_file_has_a_codecarbon_section(tmp_path, monkeypatch, section, flag, tracked):
    from py_experimenter.cli import main
    from py_experimenter.experimenter import PyExperimenter

    monkeypatch.delenv("PY_EXPERIMENTER_CODECARBON", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cc_fn.py").write_text(
        "def run(keyfields, result_processor, custom):\n"
        "    result_processor.process_results({'score': 1.0})\n")
    config = _cli_config(tmp_path, "cli_cc", section)
    assert main(["fill", config]) == 0
    assert main(["run", config, "--function", "cc_fn.py:run", *([flag] if flag else [])]) == 0
    exp = PyExperimenter(config, use_codecarbon=False)
    assert list(exp.get_table()["status"]) == ["done"]
    # fill made the table when the file has a section; run only when it tracks.
    assert ("cli_cc_codecarbon" in _table_names(exp)) is (tracked or section is not None)
    assert len(exp.get_codecarbon_table()) == (1 if tracked else 0)
    exp.db.dispose()


class _Hanging(_OddValues):
    """A tracker that never returns from ``start_task`` (a network call that hangs)."""

    release = threading.Event()
    made: ClassVar[list[object]] = []

    def __init__(self, **options: Any):
        self.made.append(self)

    def start_task(self, task_name: str | None = None) -> None:
        self.release.wait(60)


def test_a_hanging_tracker_does_not_hold_the_experiment(make_experimenter, monkeypatch, caplog):
    monkeypatch.setattr(_Hanging, "release", threading.Event())  # a fresh one per backend
    monkeypatch.setattr(_Hanging, "made", [])
    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", _Hanging)
    monkeypatch.setattr("py_experimenter.emissions.CALL_TIMEOUT_SECONDS", 0.5)
    exp = make_experimenter(KEYFIELDS, {"score": "FLOAT"}, use_codecarbon=True, Execution=FAST)
    exp.fill_table_from_config()
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="py-experimenter"):
            assert exp.execute(busy_experiment) == 2
    finally:
        _Hanging.release.set()
    assert time.monotonic() - started < 10  # two experiments of 0.3 s, one abandoned 0.5 s wait
    assert set(exp.get_table()["status"]) == {"done"}
    assert exp.get_codecarbon_table().empty
    messages = _cc_warnings(caplog)
    assert len(messages) == 1 and "did not start a task within 0.5 s" in messages[0]
    assert "no longer tracked in this process" in messages[0]
    assert len(_Hanging.made) == 1  # given up after the hang, not tried again for the second experiment


class _Recording(_OddValues):
    """Remembers the options it was made with."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **options: Any):
        self.made.append(options)


def test_offline_mode_false_uses_the_online_tracker_as_1_4_2_did(make_experimenter, monkeypatch):
    monkeypatch.setattr(_Recording, "made", [])
    monkeypatch.setattr(codecarbon, "EmissionsTracker", _Recording)
    exp = make_experimenter({"seed": {"type": "INT", "values": [1]}}, {"score": "FLOAT"}, use_codecarbon=True,
                            Execution=FAST, CodeCarbon={"offline_mode": False, "measure_power_secs": 2})
    exp.fill_table_from_config()
    assert exp.execute(busy_experiment) == 1
    assert len(_Recording.made) == 1
    assert _Recording.made[0]["measure_power_secs"] == 2 and "offline_mode" not in _Recording.made[0]
    row = exp.get_codecarbon_table().iloc[0]
    assert bool(row["offline_mode"]) is False and row["energy_consumed_kw"] == 0.5


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the same on every backend; SQLite is quick
def test_each_executor_process_has_its_own_tracker(make_experimenter):
    exp = make_experimenter({"seed": {"type": "INT", "values": [1, 2, 3, 4]}}, {"score": "FLOAT"},
                            use_codecarbon=True, Execution=FAST, CodeCarbon={"tracking_mode": "process"})
    exp.fill_table_from_config()
    assert exp.execute(busy_experiment, n_jobs=2) == 4
    table = exp.get_table().set_index("ID")
    emissions = exp.get_codecarbon_table()
    assert sorted(emissions["experiment_id"]) == sorted(table.index)
    assert set(emissions["tracking_mode"]) == {"process"}
    for _, row in emissions.iterrows():
        assert row["duration_seconds"] >= 0.25 and row["energy_consumed_kw"] > 0
