"""PyExperimenter 1.4.2's pattern: each Hydra job adds its experiment and runs it at once.

    python train_142.py --multirun dataset=iris,wine seed=0,1,2 model=small,large
    python train_142.py --multirun hydra/launcher=submitit_slurm hydra.launcher.partition=debug dataset=iris,wine
"""

import random

import hydra
from hydra.core.hydra_config import HydraConfig

from py_experimenter.experimenter import PyExperimenter


def run_experiment(keyfields, result_processor, custom_fields):
    rng = random.Random(f"{keyfields['dataset']}-{keyfields['seed']}-{keyfields['model']}")
    result_processor.process_results({"accuracy": round(0.5 + rng.random() / 2, 4), "epochs": 10})


@hydra.main(version_base="1.1", config_path="conf", config_name="config")
def main(cfg):
    # Relative paths are the folder the app was started from, although Hydra changed directory.
    experimenter = PyExperimenter("experiment.yml", use_codecarbon=False)
    experimenter.add_experiment_and_execute({"dataset": cfg.dataset, "seed": cfg.seed,
                                             "model": HydraConfig.get().runtime.choices["model"]}, run_experiment)


if __name__ == "__main__":
    main()
