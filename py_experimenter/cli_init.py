"""``py-experimenter init``: write a commented example experiment file and an experiment function.

The files are valid as written: ``fill`` then ``run --function experiment.py:run`` work at once
on the SQLite default. ``--mysql`` / ``--postgresql`` write a credential file template too.
Existing files are never overwritten unless ``--force``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from py_experimenter.exceptions import ArgumentError

PROVIDERS = {"sqlite": "SQLite file", "mysql": "MySQL / MariaDB", "postgresql": "PostgreSQL"}
_PORTS = {"mysql": 3306, "postgresql": 5432}

_DATABASE = {
    "sqlite": """\
  Database:
    provider: sqlite
    database: experiments        # the file experiments.db in the folder you run from""",
    "mysql": """\
  Database:
    provider: mysql              # MySQL 8 / MariaDB; needs --credentials {credentials}
    database: experiments        # must exist on the server (CREATE DATABASE experiments)""",
    "postgresql": """\
  Database:
    provider: postgresql         # needs --credentials {credentials}
    database: experiments        # must exist on the server (createdb experiments)""",
}

_EXPERIMENT_FILE = """\
# py_experimenter experiment file (PyExperimenter 1.4.2's format), written by `py-experimenter init`.
#
#   py-experimenter fill {config}{credentials_option}    # one row per combination of the keyfields
#   py-experimenter run  {config}{credentials_option} --function {function}:run
#   py-experimenter status {config}{credentials_option}
PY_EXPERIMENTER:
  n_jobs: 1                      # executor processes `run` starts on this machine (--n-jobs overrides)

{database}
    table:
      name: example              # the table; <name>__attempts keeps one row per try
      keyfields:                 # the grid: 2 datasets x 3 seeds = 6 experiments
        dataset:
          type: VARCHAR(50)
          values: [iris, wine]
        seed:
          type: INT
          values: {{start: 1, stop: 4}}   # stop is exclusive: 1, 2, 3
      resultfields:              # what your function stores with result_processor.process_results
        accuracy: DOUBLE
        seconds: DOUBLE
      result_timestamps: false

  Custom:                        # handed to every experiment as custom_config
    epochs: 3

  Execution:                     # optional; these are the defaults
    max_attempts: 3              # lost / interrupted tries before a row becomes error
    grace_seconds: 30            # after SIGTERM / Ctrl-C: time to finish before the row is handed back
    isolation: inline            # inline | process (needed for timeout / memory with a function)
    timeout: null                # seconds per experiment
"""

_FUNCTION_FILE = """\
\"\"\"The experiment function for {config}, written by `py-experimenter init`.

Run it with: py-experimenter run {config}{credentials_option} --function {function}:run
\"\"\"

import random
import time


def run(keyfields: dict, result_processor, custom_config: dict) -> None:
    \"\"\"One experiment: the row's keyfield values in, results out through result_processor.\"\"\"
    started = time.perf_counter()
    rng = random.Random(f"{{keyfields['dataset']}}-{{keyfields['seed']}}")
    accuracy = sum(rng.random() for _ in range(int(custom_config["epochs"]))) / int(custom_config["epochs"])
    result_processor.process_results({{"accuracy": accuracy, "seconds": time.perf_counter() - started}})
"""

_CREDENTIALS_FILE = """\
# Credential file for {config}, written by `py-experimenter init`. Keep it out of version control.
CREDENTIALS:
  Database:
    user: experimenter
    password_env: PY_EXPERIMENTER_DB_PASSWORD   # read from this variable; or `password: ...` (1.4.2's form)
  Connection:
    Standard:
      server: 127.0.0.1
      port: {port}
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``init`` to the CLI's subparsers."""
    parser = sub.add_parser("init", help="write a commented example experiment file and experiment function",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="experiment.yml",
                        help="the experiment file to write (default: experiment.yml)")
    provider = parser.add_mutually_exclusive_group()
    provider.add_argument("--mysql", dest="provider", action="store_const", const="mysql",
                          help="a MySQL / MariaDB table (also writes credentials.yml)")
    provider.add_argument("--postgresql", dest="provider", action="store_const", const="postgresql",
                          help="a PostgreSQL table (also writes credentials.yml)")
    parser.set_defaults(provider="sqlite")
    parser.add_argument("--function-file", default="experiment.py",
                        help="the experiment function's file to write (default: experiment.py)")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    return parser


def cmd_init(args: argparse.Namespace) -> int:
    """Write the files (all or none: an existing one stops before anything is written)."""
    config = Path(args.config)
    function_file = Path(args.function_file)
    if function_file.suffix != ".py":
        raise ArgumentError(f"--function-file {args.function_file!r}: must end in .py (it is a Python file)")
    credentials = config.with_name("credentials.yml") if args.provider != "sqlite" else None
    files = [path for path in (config, function_file, credentials) if path is not None]
    existing = [str(path) for path in files if path.exists()]
    if existing and not args.force:
        raise ArgumentError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                            "nothing was written (pass --force to overwrite, or name other files)")
    names = {"config": str(config), "function": str(function_file),
             "credentials_option": f" --credentials {credentials}" if credentials else "",
             "credentials": str(credentials)}
    database = _DATABASE[args.provider].format(**names)
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(_EXPERIMENT_FILE.format(database=database, **names))
    function_file.write_text(_FUNCTION_FILE.format(**names))
    if credentials is not None:
        credentials.write_text(_CREDENTIALS_FILE.format(port=_PORTS[args.provider], **names))
    print(f"wrote {', '.join(str(path) for path in files)} ({PROVIDERS[args.provider]} table 'example', "
          "6 experiments); next:")
    if credentials is not None:
        print(f"  edit {credentials} (server, user; export PY_EXPERIMENTER_DB_PASSWORD=...)")
    print(f"  py-experimenter fill {config}{names['credentials_option']}")
    print(f"  py-experimenter run {config}{names['credentials_option']} --function {function_file}:run")
    print(f"  py-experimenter status {config}{names['credentials_option']}")
    return 0
