"""What CodeCarbon tracking costs per experiment: prints figures, asserts nothing.

    .venv/bin/python scripts/bench_codecarbon.py [--n 50] [--provider sqlite|mysql|postgresql]

Run it in a fresh process: CodeCarbon detects the hardware once per process (its cache), and
the first figure below includes that. Measured, in order:

1. ``execute()`` of N no-op experiments with ``use_codecarbon=False``;
2. one experiment with CodeCarbon on in this fresh process (hardware detection included);
3. N experiments with CodeCarbon on (one reused tracker, a task per experiment);
4. CodeCarbon alone: a fresh ``OfflineEmissionsTracker`` ``start``/``stop`` per experiment
   versus ``start_task``/``stop_task`` on one tracker (what py_experimenter uses).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from py_experimenter.experimenter import PyExperimenter
from tests.conftest import SERVER_URLS, experiment_yaml


def noop(keyfields, result_processor, custom):
    result_processor.process_results({"score": 1.0})


def _experimenter(work: Path, provider: str, n: int, use_codecarbon: bool) -> PyExperimenter:
    name = f"bench_cc_{uuid.uuid4().hex[:8]}"
    data = experiment_yaml(provider, name, {"seed": {"type": "INT", "values": list(range(n))}}, {"score": "FLOAT"},
                           Execution={"heartbeat_seconds": 30})
    if provider == "sqlite":
        data["PY_EXPERIMENTER"]["Database"]["database"] = str(work / name)
    path = work / f"{name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    credentials = work / "credentials.yml"
    url = SERVER_URLS.get(provider, "")
    credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": url}}}) if url else "")
    exp = PyExperimenter(str(path), str(credentials) if url else None, use_codecarbon=use_codecarbon,
                         log_level="WARNING")
    exp.fill_table_from_config()
    return exp


def _run(exp: PyExperimenter) -> float:
    started = time.perf_counter()
    exp.execute(noop)
    elapsed = time.perf_counter() - started
    exp.delete_table()
    exp.db.dispose()
    return elapsed


def _codecarbon_alone(repeats: int) -> tuple[float, float]:
    import codecarbon

    fresh = []
    for _ in range(repeats):
        started = time.perf_counter()
        tracker = codecarbon.OfflineEmissionsTracker(country_iso_code="USA", log_level="error",
                                                     **_no_output(codecarbon))
        tracker.start()
        tracker.stop()
        fresh.append(time.perf_counter() - started)
    tracker = codecarbon.OfflineEmissionsTracker(country_iso_code="USA", log_level="error", **_no_output(codecarbon))
    tasks = []
    for _ in range(repeats):
        started = time.perf_counter()
        tracker.start_task()
        tracker.stop_task()
        tasks.append(time.perf_counter() - started)
    tracker.stop()
    return statistics.median(fresh), statistics.median(tasks)


def _no_output(codecarbon: object) -> dict[str, object]:
    return {"output_methods": []} if hasattr(codecarbon, "OutputMethod") else {"save_to_file": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="experiments per run")
    parser.add_argument("--provider", default="sqlite", choices=["sqlite", "mysql", "postgresql"])
    args = parser.parse_args()
    import codecarbon

    home = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # CodeCarbon reads ./.codecarbon.config: the folder must exist while it runs
        try:
            off = _run(_experimenter(work, args.provider, args.n, False))
            first = _run(_experimenter(work, args.provider, 1, True))
            on = _run(_experimenter(work, args.provider, args.n, True))
            fresh, task = _codecarbon_alone(10)
        finally:
            os.chdir(home)
    print(f"codecarbon {codecarbon.__version__}, {args.provider}, {args.n} no-op experiments per run")
    print(f"  codecarbon off:                     {off:7.3f} s  ({1000 * off / args.n:6.1f} ms per experiment)")
    print(f"  codecarbon on, first in a process:  {first:7.3f} s  (one experiment, hardware detection included)")
    print(f"  codecarbon on:                      {on:7.3f} s  ({1000 * on / args.n:6.1f} ms per experiment, "
          f"+{1000 * (on - off) / args.n:.1f} ms)")
    print(f"  codecarbon alone, fresh tracker start+stop: {1000 * fresh:7.1f} ms (median of 10)")
    print(f"  codecarbon alone, start_task+stop_task:     {1000 * task:7.1f} ms (median of 10)")


if __name__ == "__main__":
    main()
