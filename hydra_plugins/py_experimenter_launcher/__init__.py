"""py_experimenter's Hydra launcher plugin: ``hydra/launcher=py_experimenter`` turns a
``--multirun`` sweep into experiment rows and returns at once (see :mod:`.launcher`).

It lives in Hydra's namespace package ``hydra_plugins`` (which has no ``__init__.py``), the
only place Hydra looks for plugins; the work is done by :mod:`py_experimenter.hydra_sweep`.
"""
