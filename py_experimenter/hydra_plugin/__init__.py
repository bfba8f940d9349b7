"""py_experimenter's Hydra launcher plugin: ``hydra/launcher=py_experimenter`` turns a
``--multirun`` sweep into experiment rows and returns at once (see :mod:`.launcher`).

Written here, it is installed (pyproject.toml's package-dir) as
``hydra_plugins.py_experimenter_launcher``: in Hydra's namespace package ``hydra_plugins``
(which has no ``__init__.py``), the only place Hydra looks for plugins. Import it by that name;
the work is done by :mod:`py_experimenter.hydra_sweep`.
"""
