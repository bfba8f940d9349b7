"""``python -m py_experimenter`` runs the ``py-experimenter`` command (launchers start executors this way)."""

import sys

from py_experimenter.cli import main

sys.exit(main())
