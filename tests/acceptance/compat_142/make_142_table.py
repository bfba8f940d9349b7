"""Run by PyExperimenter 1.4.2 itself (.venv142/bin/python), never by our package.

    make_142_table.py prepare   fill seeds 1-5; ID 1 done (results + logs), ID 2 error
    make_142_table.py hang      claim the next row (ID 3), log once, touch 'hanging', sleep
                                (the test kills this process with SIGKILL: 1.4.2 leaves it 'running')

Reads config/experiment.yml (and config/database_credentials.yml for MySQL) in the cwd.
"""

import pathlib
import sys
import time

from py_experimenter.experimenter import PyExperimenter

CONFIG = "config/experiment.yml"
CREDENTIALS = "config/database_credentials.yml"


def run(parameters, result_processor, custom_config):
    seed = int(parameters["seed"])
    if seed == 2:
        raise RuntimeError("seed 2 fails under 1.4.2")
    result_processor.process_logs({"scores": {"f1": seed / 10, "note": f"seed {seed}"}})
    result_processor.process_logs({"scores": {"f1": seed / 10 + 0.05, "note": "second"}})
    result_processor.process_results({"accuracy": 0.5 + seed / 100, "model": f"svc-{seed}", "score": 2.4})


def hang(parameters, result_processor, custom_config):
    result_processor.process_logs({"scores": {"f1": 0.3, "note": "before the kill"}})
    pathlib.Path("hanging").write_text(str(parameters["seed"]))
    time.sleep(600)


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        # With CodeCarbon on, 1.4.2 also creates <table>_codecarbon (its own columns).
        PyExperimenter(CONFIG, CREDENTIALS, use_codecarbon=True, name="v142").fill_table_from_config()
        PyExperimenter(CONFIG, CREDENTIALS, use_codecarbon=False, name="v142").execute(run, max_experiments=2)
    else:
        PyExperimenter(CONFIG, CREDENTIALS, use_codecarbon=False, name="v142").execute(hang, max_experiments=1)
