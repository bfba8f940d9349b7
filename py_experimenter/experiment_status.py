"""Import path of PyExperimenter 1.4.2: ``from py_experimenter.experiment_status import ExperimentStatus``."""

from py_experimenter.status import ExperimentStatus

__all__ = ["ExperimentStatus"]
