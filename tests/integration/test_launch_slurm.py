"""``launch --on slurm`` against the real single-node Slurm of ``scripts/slurm``: a job array of
executors drains a table (each row once, job and task ids recorded), ``--wait`` (progress.follow)
returns when drained, an executor with a near deadline claims nothing, the pre-timeout signal
(SIGUSR2) hands a running row back, the errors before submitting, and the plain sbatch example."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import timezone
from pathlib import Path

import pytest
import yaml

from py_experimenter.exceptions import LaunchError
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.launchers.progress import follow
from py_experimenter.launchers.slurm import alive_record, launch_slurm, stop_record
from tests.conftest import SERVER_URLS, SlurmCluster, experiment_yaml, require_server

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = textwrap.dedent('''
    import os, time

    def quick(keyfields, result_processor, custom_fields):
        time.sleep(0.2)
        result_processor.process_results({"score": float(keyfields["seed"])})

    def first_one_hangs(keyfields, result_processor, custom_fields):
        marker = custom_fields["marker"]
        if keyfields["seed"] == 0 and not os.path.exists(marker):  # the first try of row 1 runs "too long"
            with open(marker + ".tmp", "w") as f:
                array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
                f.write(f"{array}_{task}" if array else os.environ["SLURM_JOB_ID"])  # one executor: no array
            os.replace(marker + ".tmp", marker)
            time.sleep(300)
        time.sleep(1.0 if keyfields["seed"] else 0.0)
        result_processor.process_results({"score": float(keyfields["seed"])})
''')


def _experiment(work: Path, provider: str, rows: int, **extra) -> tuple[PyExperimenter, Path, Path]:
    table = f"slurm_{uuid.uuid4().hex[:10]}"
    config = work / "experiment.yml"
    config.write_text(yaml.safe_dump(experiment_yaml(provider, table, {"seed": {"type": "INT", "values":
                                                     list(range(rows))}}, {"score": "DOUBLE"}, **extra)))
    url = f"sqlite:///{work / 'experiments.db'}" if provider == "sqlite" else SERVER_URLS[provider]
    credentials = work / "credentials.yml"
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": url}}}))
    (work / "functions.py").write_text(FUNCTIONS)
    experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    experimenter.fill_table_from_config()
    return experimenter, config, credentials


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # Slurm runs the tasks in the submitting folder
    return tmp_path


def _wait_gone(record: dict, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while alive_record(record) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive_record(record) == 0, f"Slurm job {record['job_ids']} still runs after {seconds} s"


def _utc(value) -> float:
    stamp = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
    return stamp.replace(tzinfo=timezone.utc).timestamp() if stamp.tzinfo is None else stamp.timestamp()


@pytest.mark.parametrize("provider", ["sqlite", "mysql"])
def test_a_job_array_of_three_executors_drains_the_table(slurm_cluster: SlurmCluster, work: Path, provider: str):
    require_server(provider)
    experimenter, config, credentials = _experiment(work, provider, 30)
    out = io.StringIO()
    try:
        record = launch_slurm(config, 3, f"{work / 'functions.py'}:quick", credentials,
                              partition=slurm_cluster.partition, time_limit="5m", out=out)
        try:
            array = record["job_ids"][0]
            assert record["tasks"] == [f"{array}_{task}" for task in range(3)]
            printed = out.getvalue()
            assert f"submitted job array {array}: 3 executors" in printed
            assert f"squeue -j {array}" in printed and f"scancel {array}" in printed
            assert f"watch:  py-experimenter status {config} --credentials {credentials}" in printed
            assert Path(record["record_path"]).exists()

            follow_out = io.StringIO()
            counts = follow(experimenter, alive=lambda: alive_record(record), out=follow_out, interval=0.5,
                            rich=False)
            assert counts == {"done": 30}, follow_out.getvalue()
            assert "drained in" in follow_out.getvalue().splitlines()[-1]
            _wait_gone(record)
        finally:
            stop_record(record, io.StringIO())
        table = experimenter.get_table()
        attempts = experimenter.get_attempts_table()
        assert sorted(table["score"]) == list(map(float, range(30)))
        assert len(attempts) == 30 and attempts["experiment_id"].is_unique  # each row ran exactly once
        assert set(attempts["outcome"]) == {"done"}
        tasks = {f"{array}_{task}" for task in range(3)}
        assert set(attempts["job_id"]) == tasks  # every task got work; "<array>_<task>" recorded
        assert set(table["job_id"]) == tasks
        first_claim = min(_utc(value) for value in attempts["started_at"])
        print(f"\n[{provider}] launch to first claimed row: {first_claim - record['launched_at']:.2f} s")
        assert first_claim - record["launched_at"] < 60
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()


def test_an_executor_whose_deadline_is_near_claims_nothing(slurm_cluster: SlurmCluster, work: Path):
    experimenter, config, credentials = _experiment(work, "sqlite", 3)
    try:
        record = launch_slurm(config, 1, f"{work / 'functions.py'}:quick", credentials, time_limit=5,
                              run_args=["--deadline", "+5", "--expected-seconds", "30"], out=io.StringIO())
        _wait_gone(record)
        assert set(experimenter.get_table()["status"]) == {"created"}
        assert experimenter.get_attempts_table().empty
        log_file = Path(record["folder"], f"{record['job_ids'][0]}_0_log.err")
        deadline = time.monotonic() + 10  # the task's output may reach the file after squeue forgot the job
        while "deadline" not in (log := log_file.read_text() if log_file.exists() else "") \
                and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "deadline" in log and "Traceback" not in log, log
        deadline = time.monotonic() + 20  # accounting can lag behind squeue by a few seconds
        while True:
            result = subprocess.run(["sacct", "-n", "-X", "-j", record["job_ids"][0], "-o", "State,ExitCode", "-P"],
                                    capture_output=True, text=True, check=True).stdout
            state = (result.strip().splitlines() or [""])[0]
            if state.split("|")[0] not in ("", "PENDING", "RUNNING", "COMPLETING") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert state == "COMPLETED|0:0", result
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()


def test_usr2_hands_a_running_row_back_and_another_task_finishes_it(slurm_cluster: SlurmCluster, work: Path):
    # the other task is busy with rows 2..8 (1 s each) when row 1 comes back after the 2 s grace period
    experimenter, config, credentials = _experiment(work, "sqlite", 8, Custom={"marker": str(work / "hung")},
                                                    Execution={"grace_seconds": 2})
    try:
        record = launch_slurm(config, 2, f"{work / 'functions.py'}:first_one_hangs", credentials, time_limit=5,
                              out=io.StringIO())
        try:
            deadline = time.monotonic() + 60
            while not (work / "hung").exists():
                assert time.monotonic() < deadline and alive_record(record), "no task started row 1"
                time.sleep(0.2)
            hung_task = (work / "hung").read_text()
            signalled = time.monotonic()
            subprocess.run(["scancel", "--signal=USR2", hung_task], check=True, timeout=30)
            counts = follow(experimenter, alive=lambda: alive_record(record), out=io.StringIO(), interval=0.5,
                            rich=False)
            assert counts == {"done": 8}
            assert time.monotonic() - signalled < 40  # the 2 s grace period, not the 300 s experiment
            _wait_gone(record)
        finally:
            stop_record(record, io.StringIO())
        attempts = experimenter.get_attempts_table()
        first = attempts[attempts["experiment_id"] == 1].sort_values("attempt")
        assert list(first["outcome"]) == ["interrupted", "done"]
        assert first.iloc[0]["job_id"] == hung_task and first.iloc[1]["job_id"] != hung_task  # the other task
        log = Path(record["folder"], f"{hung_task}_0_log.err").read_text()
        assert "SIGUSR2" in log and "handed back" in log, log
        assert "requeue" not in log.lower()  # submitit's own USR2 handler never ran
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()


def test_stop_hands_the_running_experiment_back(slurm_cluster: SlurmCluster, work: Path):
    experimenter, config, credentials = _experiment(work, "sqlite", 1, Custom={"marker": str(work / "hung")},
                                                    Execution={"grace_seconds": 60})  # > Slurm's KillWait
    try:
        record = launch_slurm(config, 1, f"{work / 'functions.py'}:first_one_hangs", credentials, time_limit=5,
                              out=io.StringIO())
        deadline = time.monotonic() + 60
        while not (work / "hung").exists():
            assert time.monotonic() < deadline and alive_record(record), "the task did not start row 1"
            time.sleep(0.2)
        out = io.StringIO()
        started = time.monotonic()
        assert stop_record(record, out) == 1
        assert time.monotonic() - started < 30 and alive_record(record) == 0
        assert "slurm: stopped job" in out.getvalue()
        assert list(experimenter.get_table()["status"]) == ["created"]  # not 'running' until its lease expires
        assert list(experimenter.get_attempts_table()["outcome"]) == ["interrupted"]
        assert "nothing to stop" in (lambda o: (stop_record(record, o), o.getvalue())[1])(io.StringIO())
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()


def test_a_signal_before_the_executor_runs_stops_it_from_claiming(tmp_path: Path):
    """run_executor (what each array task runs) replaces submitit's USR2 handler (which requeues
    the job) until the executor installs its own: a USR2 then means "claim nothing and leave"."""
    experimenter, config, credentials = _experiment(tmp_path, "sqlite", 2)
    (tmp_path / "early.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGUSR2)  # arrives while --function is loaded\n"
        "def run(keyfields, result_processor, custom_fields):\n    result_processor.process_results({'score': 1})\n")
    code = textwrap.dedent(f"""
        import signal, sys
        signal.signal(signal.SIGUSR2, lambda *_: sys.exit("submitit's handler ran"))  # as submitit installs it
        from py_experimenter.launchers.slurm import run_executor
        sys.exit(run_executor(["run", {str(config)!r}, "--credentials", {str(credentials)!r},
                               "--function", {str(tmp_path / "early.py") + ":run"!r}], {{"EXTRA": "1"}}))
    """)
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PY_EXPERIMENTER_DEADLINE": ""})
        assert done.returncode == 0, done.stderr
        assert "SIGUSR2 outside an experiment: no experiment will be claimed" in done.stderr
        assert "ran 0 experiments" in done.stdout
        assert set(experimenter.get_table()["status"]) == {"created"}
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()


def _cli(work: Path, *args: str, env: dict[str, str] | None = None, prelude: str = "",
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``py-experimenter ARGS`` in a fresh interpreter (``prelude`` runs first)."""
    code = f"import sys\n{prelude}\nfrom py_experimenter.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=work, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def test_launch_on_slurm_from_the_command_line_waits_until_drained(slurm_cluster: SlurmCluster, work: Path):
    experimenter, config, credentials = _experiment(work, "sqlite", 6)
    try:
        done = _cli(work, "launch", str(config), "--on", "slurm", "-n", "2", "--credentials", str(credentials),
                    "--function", "functions.py:quick", "--time", "5", "--cpus", "1", "--mem", "256M",
                    "--sbatch", "comment=pyexp-test", "--setup", "echo setup-line-ran", "--wait",
                    "--", "--max-experiments", "5")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "submitted job array" in done.stdout and "drained in" in done.stdout, done.stdout
        assert list(experimenter.get_table()["status"]) == ["done"] * 6
        assert set(experimenter.get_attempts_table()["job_id"].str.split("_").str[1]) == {"0", "1"}  # 5 at most each
        folder = next(work.glob("py_experimenter_logs/*/slurm-*/submitit"))
        script = next(folder.glob("*_submission.sh")).read_text().splitlines()
        for line in ("#SBATCH --array=0-1%2", "#SBATCH --time=5", "#SBATCH --mem=256M", "#SBATCH --comment=pyexp-test",
                     "#SBATCH --cpus-per-task=1", "#SBATCH --signal=USR2@90", "echo setup-line-ran"):
            assert line in script, script
        assert any("setup-line-ran" in log.read_text() for log in folder.glob("*_log.out"))
        stop = _cli(work, "launch", str(config), "--on", "slurm", "--stop", "--credentials", str(credentials))
        assert stop.returncode == 0 and "slurm: nothing to stop" in stop.stdout, stop.stdout + stop.stderr
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()


def test_errors_before_anything_is_submitted(slurm_cluster: SlurmCluster, work: Path,
                                             capsys: pytest.CaptureFixture[str]):
    experimenter, config, credentials = _experiment(work, "sqlite", 1)
    launch = ["launch", str(config), "--on", "slurm", "-n", "2", "--credentials", str(credentials),
              "--function", "os:getcwd"]
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout

    def one_line(done: subprocess.CompletedProcess[str]) -> str:
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("py-experimenter: error: ")
        return done.stderr.removeprefix("py-experimenter: error: ")

    bare = work / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    no_slurm = one_line(_cli(work, *launch, env={**os.environ, "PATH": str(bare)}))
    assert no_slurm.startswith("Slurm is not reachable from here: sbatch not found on PATH; run launch on a login")

    # a slurm.conf that Slurm's own parser refuses (a cluster's broken or half-loaded Slurm module)
    broken_conf = work / "slurm.conf"
    broken_conf.write_text("SlurmctldHost=localhost\n")
    broken = one_line(_cli(work, *launch, env={**os.environ, "SLURM_CONF": str(broken_conf)}))
    assert broken == "Slurm is not reachable from here: sinfo failed: sinfo: error: ClusterName needs to be specified\n"

    unknown = one_line(_cli(work, *launch, "--partition", "gpu-huge"))
    assert unknown.startswith(f"unknown Slurm partition 'gpu-huge'; the partitions are {slurm_cluster.partition}")

    no_submitit = one_line(_cli(work, *launch, prelude="sys.modules['submitit'] = None"))
    assert no_submitit.startswith("launching on Slurm needs the submitit package")
    assert "pip install 'py-experimenter[slurm]'" in no_submitit

    refused = one_line(_cli(work, *launch, "--mem", "900T", "--time", "1"))
    assert refused == ("sbatch refused the job array: Memory specification can not be satisfied; "
                       "Batch job submission failed: Requested node configuration is not available\n")
    assert "time limit 'soon' is not a time limit" in one_line(_cli(work, *launch, "--time", "soon"))
    assert "memory '4 gigs' is not an amount of memory" in one_line(_cli(work, *launch, "--mem", "4 gigs"))

    capsys.readouterr()
    with pytest.raises(LaunchError, match=r"^unknown Slurm partition 'nope'"):  # the Python API: the same errors
        launch_slurm(config, 2, "os:getcwd", credentials, partition="nope", out=io.StringIO())
    with pytest.raises(LaunchError, match=r"^sbatch refused the job array: Memory specification"):
        launch_slurm(config, 2, "os:getcwd", credentials, mem="900T", out=io.StringIO())
    assert capsys.readouterr().err == ""  # submitit's echo of sbatch's message is swallowed
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    assert set(after.split()) <= set(before.split())  # nothing was submitted
    assert set(experimenter.get_table()["status"]) == {"created"}
    experimenter.delete_table()
    experimenter.db.dispose()


def test_the_plain_sbatch_example_drains_a_table_and_hands_back_on_usr2(slurm_cluster: SlurmCluster, work: Path):
    """docs/examples/slurm/array.sbatch as a user submits it (sbatch --wait): its two tasks drain the
    table; SIGUSR2 to one task's batch shell (what --signal=B:USR2@120 sends) reaches the exec'd
    executor, which hands its running row back, and the other task finishes it."""
    experimenter, config, credentials = _experiment(work, "sqlite", 8, Custom={"marker": str(work / "hung")},
                                                    Execution={"grace_seconds": 2})
    script = REPO / "docs" / "examples" / "slurm" / "array.sbatch"
    try:
        env = {**os.environ, "VENV": str(Path(sys.executable).parent.parent), "CONFIG": str(config),
               "CREDENTIALS": str(credentials), "FUNCTION": f"{work / 'functions.py'}:first_one_hangs"}
        submitted = subprocess.Popen(["sbatch", "--wait", "--array=0-1", "--time=5", str(script)], cwd=work, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while not (work / "hung").exists():
                assert time.monotonic() < deadline and submitted.poll() is None, "no task started row 1"
                time.sleep(0.2)
            hung_task = (work / "hung").read_text()
            subprocess.run(["scancel", "--batch", "--signal=USR2", hung_task], check=True, timeout=30)
            output, _ = submitted.communicate(timeout=120)
        finally:
            if submitted.poll() is None:
                submitted.kill()
        assert submitted.returncode == 0, output
        array = output.split()[-1]
        table = experimenter.get_table()
        assert list(table["status"]) == ["done"] * 8
        attempts = experimenter.get_attempts_table()
        assert set(attempts["job_id"]) == {f"{array}_0", f"{array}_1"}
        first = attempts[attempts["experiment_id"] == 1].sort_values("attempt")
        assert list(first["outcome"]) == ["interrupted", "done"] and first.iloc[1]["job_id"] != hung_task
        log = (work / f"py-experimenter-{hung_task}.log").read_text()
        assert "SIGUSR2" in log and "handed back" in log, log
    finally:
        experimenter.delete_table()
        experimenter.db.dispose()
