"""py_experimenter: a database-coordinated experiment executor, compatible with PyExperimenter 1.4.2."""

from py_experimenter.experimenter import PyExperimenter
from py_experimenter.result_processor import ResultProcessor
from py_experimenter.status import ExperimentStatus

__all__ = ["ExperimentStatus", "PyExperimenter", "ResultProcessor"]
__version__ = "2.0.0.dev0"
