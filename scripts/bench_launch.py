"""Seconds from ``py-experimenter launch`` to the first claimed row, per backend (a figure, not a test).

    scripts/bench launch [--backends local,ssh,slurm] [--repeat 3]

Each round fills a fresh MariaDB table (PY_EXPERIMENTER_TEST_MYSQL_URL, default: the
scripts/services server) with 6 short experiments, starts the clock, runs ``launch`` as a
user would (a subprocess) and polls the table every 20 ms until a row is claimed; then it
waits for the executors to drain the table. ssh uses the scripts/sshd server on
127.0.0.1:2222, slurm the scripts/slurm cluster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
URL = os.environ.get("PY_EXPERIMENTER_TEST_MYSQL_URL",
                     "mysql+pymysql://pyexp:pyexp-test@127.0.0.1:3306/py_experimenter_test")
SSH_OPTIONS = ["--ssh-option=-i /root/.ssh/py_experimenter_test", "--ssh-option=-oStrictHostKeyChecking=no",
               "--ssh-option=-oUserKnownHostsFile=/dev/null", "--ssh-option=-oLogLevel=ERROR"]
BACKEND_ARGS = {
    "local": ["--on", "local"],
    "ssh": ["--on", "ssh", "--hosts", "root@127.0.0.1:2222", "--remote-python", PYTHON, *SSH_OPTIONS],
    "slurm": ["--on", "slurm", "--time", "5"],
}
EXPERIMENT = "import time\n\ndef run(keyfields, result_processor, custom_config):\n    time.sleep(0.05)\n"


def _write_files(folder: Path, table: str) -> tuple[Path, Path]:
    config = {"PY_EXPERIMENTER": {"n_jobs": 1, "Database": {
        "provider": "mysql", "database": sa.make_url(URL).database,
        "table": {"name": table, "keyfields": {"seed": {"type": "INT", "values": list(range(6))}}}}}}
    (folder / "exp.yml").write_text(yaml.safe_dump(config))
    (folder / "db.yml").write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": URL}}}))
    (folder / "experiment.py").write_text(EXPERIMENT)
    return folder / "exp.yml", folder / "db.yml"


def _cli(*args: str, cwd: Path) -> None:
    subprocess.run([PYTHON, "-m", "py_experimenter", *args], cwd=cwd, check=True, capture_output=True, text=True)


def one_round(backend: str, engine: sa.Engine) -> float:
    """Seconds from starting ``launch`` until the first row of a fresh table is claimed."""
    table = f"bench_launch_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config, credentials = _write_files(folder, table)
        _cli("fill", str(config), "--credentials", str(credentials), cwd=folder)
        query = sa.text(f"SELECT COUNT(*) FROM {table} WHERE status <> 'created'")
        start = time.perf_counter()
        subprocess.Popen([PYTHON, "-m", "py_experimenter", "launch", str(config), "--credentials", str(credentials),
                          "--function", "experiment.py:run", "-n", "1", *BACKEND_ARGS[backend]],
                         cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        claimed_after = None
        while time.perf_counter() - start < 120:
            with engine.connect() as conn:
                if conn.execute(query).scalar_one():
                    claimed_after = time.perf_counter() - start
                    break
            time.sleep(0.02)
        drained = sa.text(f"SELECT COUNT(*) FROM {table} WHERE status IN ('created', 'running')")
        while time.perf_counter() - start < 180:
            with engine.connect() as conn:
                if not conn.execute(drained).scalar_one():
                    break
            time.sleep(0.2)
        time.sleep(1.0)  # let the executor exit before its table goes
        _cli("launch", str(config), "--credentials", str(credentials), "--stop", "--stop-timeout", "5", cwd=folder)
        with engine.begin() as conn:
            for name in (f"{table}__attempts", table):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    if claimed_after is None:
        raise SystemExit(f"bench launch: {backend}: no row claimed within 120 s")
    return claimed_after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="local,ssh,slurm")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    engine = sa.create_engine(URL)
    print(f"{'backend':<8} {'median s':>9} {'min s':>7} {'max s':>7}  (launch -> first claimed row, MariaDB, "
          f"{args.repeat} rounds)")
    for backend in args.backends.split(","):
        times = [one_round(backend, engine) for _ in range(args.repeat)]
        print(f"{backend:<8} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f}")
    engine.dispose()


if __name__ == "__main__":
    main()
