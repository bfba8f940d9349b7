"""A PyExperimenter 1.4.2 user's script, unchanged: 1.4.2 imports, signature and calls."""

import os
import random

from py_experimenter.experiment_status import ExperimentStatus
from py_experimenter.experimenter import PyExperimenter
from py_experimenter.result_processor import ResultProcessor


def run_ml(parameters: dict, result_processor: ResultProcessor, custom_config: dict):
    seed = parameters["seed"]
    random.seed(seed)
    if parameters["kernel"] == "sigmoid" and seed == 6 and not os.path.exists("failed_once"):
        open("failed_once", "w").close()
        raise ValueError("sigmoid does not converge for seed 6")
    train_f1 = round(0.5 + random.random() / 2, 4)
    result_processor.process_logs({"train_scores": {"f1": train_f1, "accuracy": 0.9, "kernel": parameters["kernel"]}})
    result_processor.process_logs({"test_f1": {"test_f1": train_f1 - 0.05}})
    result_processor.process_results({
        "pipeline": f"SVC(kernel={parameters['kernel']}) on {custom_config['datapath']}",
        "train_f1": train_f1,
        "train_accuracy": 0.9,
        "test_f1": train_f1 - 0.05,
        "test_accuracy": 0.85,
    })
    if parameters["dataset"] == "paused_data":
        return ExperimentStatus.PAUSED
    return ExperimentStatus.DONE


experimenter = PyExperimenter(experiment_configuration_file_path="config/example_general_usage.yml", name="example_notebook")
experimenter.fill_table_from_config()
experimenter.fill_table_with_rows(rows=[{"dataset": "paused_data", "cross_validation_splits": 4, "seed": 42, "kernel": "linear"}])
experimenter.execute(run_ml, max_experiments=-1)
experimenter.reset_experiments("error")
experimenter.execute(run_ml, max_experiments=1)
experimenter.unpause_experiment(21, lambda parameters, result_processor, custom_config: None)
table = experimenter.get_table()
table.to_csv("result_table.csv", index=False)
experimenter.get_logtable("train_scores").to_csv("train_scores.csv", index=False)
print(table[["ID", "kernel", "seed", "status", "train_f1", "name"]].to_string())
