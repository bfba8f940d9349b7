"""A Hydra task for the launcher plugin: it returns its results instead of writing them.

    python train.py --multirun hydra/launcher=py_experimenter \
        hydra.launcher.experiment_config=experiment.yml dataset=iris,wine seed=0,1,2 model=small,large
    py-experimenter run experiment.yml --function py_experimenter.hydra_task:run_hydra_task
"""

import random

import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def train(cfg):
    rng = random.Random(f"{cfg.dataset}-{cfg.seed}-{cfg.model.width}")
    return {"accuracy": round(0.5 + rng.random() / 2, 4), "epochs": cfg.train.epochs}


if __name__ == "__main__":
    train()
