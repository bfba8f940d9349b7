"""Bad input to every ``py-experimenter`` subcommand: exit 2, ONE line on stderr, no traceback,
no password, and (for refused connections) a quick answer.

Every case runs ``.venv/bin/py-experimenter`` as a subprocess; the cases run a few at a time
in threads so that the whole table takes well under a minute.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import Backend, experiment_yaml

ENTRY = Path(sys.executable).with_name("py-experimenter")
PASSWORD = "S3cr3t-Pw-4711"  # recognisable: must never appear in any output
COMMANDS = {  # the extra arguments each subcommand needs to get as far as the database
    "fill": [],
    "run": ["--function", "fn.py:run", "--database-outage-seconds", "0"],
    "status": [],
    "reset": ["--status", "all"],
    "cancel": ["--id", "1"],
    "migrate": [],
}
KEYFIELDS = {"seed": {"type": "INT", "values": [1, 2]}}


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str  # a piece of the one stderr line
    env: dict[str, str] = field(default_factory=dict)
    quick: bool = False  # a refused connection: answer within a few seconds


def _write(path: Path, data: object) -> str:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path.name


def _workspace(root: Path) -> None:
    _write(root / "good.yml", experiment_yaml("sqlite", "filled", KEYFIELDS, {"score": "DOUBLE"}))
    _write(root / "unfilled.yml", experiment_yaml("sqlite", "never_filled", KEYFIELDS))
    _write(root / "mysql.yml", experiment_yaml("mysql", "t", KEYFIELDS))
    _write(root / "postgres.yml", experiment_yaml("postgresql", "t", KEYFIELDS))
    notdb = experiment_yaml("sqlite", "t", KEYFIELDS)
    notdb["PY_EXPERIMENTER"]["Database"]["database"] = "notdb"
    _write(root / "notdb.yml", notdb)
    (root / "notdb.db").write_text("these are my notes, not a SQLite database\n")
    _write(root / "broken.yml", "PY_EXPERIMENTER:\n  Database: [unclosed\n")
    (root / "latin1.yml").write_bytes("PY_EXPERIMENTER:\n  n_jobs: 1  # \u00e9t\u00e9\n".encode("latin-1"))
    unknown = experiment_yaml("sqlite", "t", KEYFIELDS)
    unknown["PY_EXPERIMENTER"]["bogus_key"] = 3
    _write(root / "unknown.yml", unknown)
    dead = {"CREDENTIALS": {"Database": {"user": "pyexp", "password": PASSWORD},
                            "Connection": {"Standard": {"server": "127.0.0.1", "port": 1}}}}
    _write(root / "dead.yml", dead)
    _write(root / "badcreds.yml", f"CREDENTIALS:\n  Database:\n    password: {PASSWORD}\n   user: [x\n")
    _write(root / "fn.py", textwrap.dedent("""
        NOT_CALLABLE = 3

        def run(keyfields, result_processor, custom_fields):
            result_processor.process_results({"score": 1.0})
    """))
    _write(root / "broken_fn.py", "def run(keyfields:\n    pass\n")
    subprocess.run([str(ENTRY), "fill", "good.yml"], cwd=root, check=True, capture_output=True, timeout=120)


def _cases() -> list[Case]:
    # Every subcommand reaches the database its own way (fill creates, run claims, status /
    # reset / cancel need the table, migrate inspects): each meets a missing file, a file that
    # is not SQLite and a refused server. The file checks share one loader, so each of them is
    # tried on two subcommands (every subcommand gets some): the table stays under a minute.
    cases = []
    for command, extra in COMMANDS.items():
        cases += [
            Case(f"{command}-missing-config", [command, "nothere.yml", *extra], "experiment file not found"),
            Case(f"{command}-not-sqlite", [command, "notdb.yml", *extra], "not a database"),
        ]
        if command != "run":  # run rides out outages (see test_run_against_an_unreachable_server)
            cases.append(Case(f"{command}-mysql-refused", [command, "mysql.yml", "--credentials", "dead.yml", *extra],
                              "Connection refused", quick=True))
    for command in ("status", "migrate"):
        cases.append(Case(f"{command}-postgres-refused", [command, "postgres.yml", "--credentials", "dead.yml"],
                          "Connection refused", quick=True))
    file_cases = [
        ("invalid-yaml", ["broken.yml"], "broken.yml: YAML syntax error", ("fill", "reset")),
        ("not-utf8", ["latin1.yml"], "latin1.yml: the experiment file is not UTF-8 text", ("fill", "run")),
        ("unknown-key", ["unknown.yml"], "unknown key 'bogus_key'", ("run", "cancel")),
        ("missing-credentials", ["mysql.yml", "--credentials", "nope.yml"], "nope.yml: credential file not found",
         ("status", "migrate")),
        ("invalid-credentials", ["mysql.yml", "--credentials", "badcreds.yml"], "badcreds.yml", ("run", "fill")),
    ]
    for kind, argv, expect, commands in file_cases:
        for command in commands:
            cases.append(Case(f"{command}-{kind}", [command, *argv, *COMMANDS[command]], expect))
    for command, extra in (("status", []), ("reset", ["--status", "error"]), ("cancel", ["--id", "1"])):
        cases.append(Case(f"{command}-before-fill", [command, "unfilled.yml", *extra],
                          "table 'never_filled' does not exist yet in sqlite:///py_experimenter_test.db; "
                          "run py-experimenter fill unfilled.yml"))
    run = ["run", "good.yml", "--function", "fn.py:run"]
    cases += [
        Case("n-jobs-0", [*run, "--n-jobs", "0"], "--n-jobs=0: must be a positive integer"),
        Case("n-jobs-negative", [*run, "--n-jobs", "-1"], "--n-jobs=-1: must be a positive integer"),
        Case("n-jobs-abc", [*run, "--n-jobs", "abc"], "--n-jobs='abc': not an integer"),
        Case("n-jobs-env", run, "PY_EXPERIMENTER_N_JOBS='abc': not an integer", env={"PY_EXPERIMENTER_N_JOBS": "abc"}),
        Case("max-experiments-0", [*run, "--max-experiments", "0"], "--max-experiments=0: must be a positive"),
        Case("max-experiments-abc", [*run, "--max-experiments", "x"], "--max-experiments='x': not an integer"),
        Case("max-experiments-env", run, "PY_EXPERIMENTER_MAX_EXPERIMENTS='2.5'",
             env={"PY_EXPERIMENTER_MAX_EXPERIMENTS": "2.5"}),
        Case("function-missing-file", ["run", "good.yml", "--function", "nope.py:run"], "nope.py' does not exist"),
        Case("function-syntax-error", ["run", "good.yml", "--function", "broken_fn.py:run"],
             "SyntaxError at "),
        Case("function-missing-attribute", ["run", "good.yml", "--function", "fn.py:rnu"],
             "'fn.py' has no attribute 'rnu'; its callables are ['run']"),
        Case("function-not-callable", ["run", "good.yml", "--function", "fn.py:NOT_CALLABLE"],
             "'NOT_CALLABLE' in 'fn.py' is a int, not a function"),
        Case("function-missing-module", ["run", "good.yml", "--function", "no_such_module_x:run"],
             "no module named 'no_such_module_x'"),
        Case("function-none", ["run", "good.yml"], "no experiment function: pass --function"),
        Case("status-bad-value", ["reset", "good.yml", "--status", "finished"], "invalid choice: 'finished'"),
        Case("where-escape", ["reset", "good.yml", "--status", "error", "--where", "1=0) OR (1=1"],
             "invalid --where condition '1=0) OR (1=1': not valid SQL"),
        Case("where-two-statements", ["cancel", "good.yml", "--where", "seed=1; DROP TABLE filled"],
             "exactly one condition is allowed"),
        Case("where-unknown-column", ["cancel", "good.yml", "--where", "sed = 1"],
             "'sed' is not a column of table 'filled'; the columns are ['ID', 'seed'"),
        Case("id-abc", ["cancel", "good.yml", "--id", "abc"], "argument --id: 'abc' is not an experiment ID"),
        Case("id-0", ["cancel", "good.yml", "--id", "0"], "'0' is not an experiment ID (IDs start at 1)"),
        Case("cancel-nothing-chosen", ["cancel", "good.yml"], "name the experiments to cancel"),
        Case("by-not-a-keyfield", ["status", "good.yml", "--by", "nope"], "--by 'nope' is not a keyfield"),
        Case("no-command", [], "the following arguments are required: COMMAND"),
        Case("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ]
    return cases


CASES = _cases()
QUICK = {c.name: c.quick for c in CASES}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], float]]:
    root = tmp_path_factory.mktemp("cli_errors")
    _workspace(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PY_EXPERIMENTER_")}

    def one(case: Case) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        result = subprocess.run([str(ENTRY), *case.argv], cwd=root, env={**env, **case.env},
                                capture_output=True, text=True, timeout=120)
        return result, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([c.name for c in CASES], pool.map(one, CASES), strict=True))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_exit_2_and_one_line(results, case: Case):
    result, seconds = results[case.name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("py-experimenter: error: ") and case.expect in lines[0], lines[0]
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr + result.stdout
    if case.quick:
        # Beyond the start-up every run of the CLI pays (slow on a loaded machine: the typical
        # time of the cases that reach no server), a refused connection answers within seconds.
        startup = statistics.median(t for name, (_, t) in results.items() if not QUICK[name])
        assert seconds - startup < 15, f"a refused connection took {seconds:.1f} s to report (start-up {startup:.1f} s)"


def test_debug_shows_the_traceback(tmp_path: Path):
    _write(tmp_path / "broken_fn.py", "def run(:\n")
    _write(tmp_path / "good.yml", experiment_yaml("sqlite", "t", KEYFIELDS))
    result = subprocess.run([str(ENTRY), "--debug", "run", "good.yml", "--function", "broken_fn.py:run"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "SyntaxError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("py-experimenter: error: --function")


def test_run_against_an_unreachable_server_gives_up_after_the_outage_allowance(tmp_path: Path):
    # run waits for a restarting database by design (Execution.database_outage_seconds); it says
    # so in one warning, then ends with the one error line.
    _write(tmp_path / "mysql.yml", experiment_yaml("mysql", "t", KEYFIELDS))
    dead = {"CREDENTIALS": {"Database": {"user": "pyexp", "password": PASSWORD},
                            "Connection": {"Standard": {"server": "127.0.0.1", "port": 1}}}}
    _write(tmp_path / "dead.yml", dead)
    _write(tmp_path / "fn.py", "def run(k, r, c):\n    pass\n")
    started = time.monotonic()
    result = subprocess.run([str(ENTRY), "run", "mysql.yml", "--credentials", "dead.yml", "--function", "fn.py:run",
                             "--database-outage-seconds", "1"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and time.monotonic() - started < 20  # a failed run, as documented
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("py-experimenter: error: the database mysql+pymysql://pyexp:***@127.0.0.1:1/")
    assert all("WARNING" in line for line in lines[:-1]) and len(lines) <= 2
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr


def test_server_table_not_created_yet(backend: Backend):
    provider = backend.provider
    if provider == "sqlite":
        pytest.skip("SQLite is in the table above (status-before-fill)")
    table = f"never_{os.getpid()}_{provider[:2]}"
    _write(backend.workdir / "e.yml", experiment_yaml(provider, table, KEYFIELDS))
    creds = str(backend.credentials_file())
    password = backend.url.split(":")[2].split("@")[0]
    for argv, expect in (
        (["status", "e.yml"], f"table '{table}' does not exist yet"),
        (["reset", "e.yml", "--status", "all", "--where", "seed = 1"], f"table '{table}' does not exist yet"),
        (["cancel", "e.yml", "--where", "seed = 1"], f"table '{table}' does not exist yet"),
    ):
        result = subprocess.run([str(ENTRY), *argv, "--credentials", creds], cwd=backend.workdir,
                                capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expect in lines[0], result.stderr
        assert password not in result.stderr


def test_function_file_named_like_a_stdlib_module_runs_in_forked_jobs(tmp_path: Path):
    # queue.py must load this file, not the standard library's queue; n_jobs children are forked.
    _write(tmp_path / "queue.py", textwrap.dedent("""
        import os

        def run(keyfields, result_processor, custom_fields):
            result_processor.process_results({"score": float(os.getpid())})
    """))
    keyfields = {"seed": {"type": "INT", "values": [1, 2, 3, 4]}}
    _write(tmp_path / "e.yml", experiment_yaml("sqlite", "stdlib_names", keyfields, {"score": "DOUBLE"}))
    assert subprocess.run([str(ENTRY), "fill", "e.yml"], cwd=tmp_path, capture_output=True, timeout=120).returncode == 0
    result = subprocess.run([str(ENTRY), "run", "e.yml", "--function", "queue.py:run", "--n-jobs", "2"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ran 4 experiments" in result.stdout
    status = subprocess.run([str(ENTRY), "status", "e.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "done" in status.stdout and " 4" in status.stdout.split("done", 1)[1].splitlines()[0]
