"""Optional CodeCarbon emission tracking: one measured task per experiment, one row per attempt.

CodeCarbon is an extra (``pip install 'py-experimenter[codecarbon]'``). When it is missing,
tracking is skipped with one warning per process and experiments run as usual.

How it runs:

* One tracker per executor process, reused: each experiment is one CodeCarbon *task*
  (``start_task`` / ``stop_task``), so hardware detection (1–3 s, CodeCarbon's own cost) is
  paid once per process, not once per experiment. A CodeCarbon without tasks gets a fresh
  tracker per experiment (``start`` / ``stop``).
* Offline by default (:data:`DEFAULT_COUNTRY_ISO_CODE` unless the ``CodeCarbon`` section,
  ``CODECARBON_COUNTRY_ISO_CODE`` or a ``.codecarbon.config`` names a country);
  ``offline_mode: false`` asks for CodeCarbon's online tracker, as in PyExperimenter 1.4.2.
  Every tracker call runs under a time limit, so a tracker waiting on the network cannot
  hold an experiment up for longer.
* The figures go to ``<table>_codecarbon`` (PyExperimenter 1.4.2's columns plus ``attempt``)
  through :mod:`py_experimenter.emissions_store`, fenced like every write of the executor.
* A tracker that fails anywhere never fails the experiment: one warning per process and
  cause, and the experiment goes on without figures.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from py_experimenter.emissions_store import EmissionsStore

if TYPE_CHECKING:
    from py_experimenter.queue import Experiment, ExperimentQueue

logger = logging.getLogger("py-experimenter")
T = TypeVar("T")

#: The country assumed offline when no country is configured anywhere (3-letter ISO code).
DEFAULT_COUNTRY_ISO_CODE = "USA"
#: Seconds a tracker call (create, start, stop) may take before it is abandoned.
CALL_TIMEOUT_SECONDS = 30.0
#: Tasks one tracker measures before it is replaced (CodeCarbon keeps every task in memory).
TASKS_PER_TRACKER = 1000

#: PyExperimenter 1.4.2's ``save_to_*`` keys and the CodeCarbon 3 output method each means.
_SAVE_FLAGS = {"save_to_file": "CSV", "save_to_api": "API", "save_to_logger": "LOGGER",
               "save_to_prometheus": "PROMETHEUS", "save_to_logfire": "LOGFIRE"}
_OUR_KEYS = ("offline_mode",)

_not_installed_warned = False
_warned: set[tuple[int, str]] = set()


def codecarbon_available(*, warn: bool = True) -> bool:
    """True when the codecarbon package can be imported.

    A broken installation always warns (once per process); a missing one warns only when ``warn``
    is true, i.e. when the user asked for CodeCarbon (a ``CodeCarbon`` section in the experiment
    file), so that a fresh install without the extra runs quietly.
    """
    global _not_installed_warned
    try:
        importlib.import_module("codecarbon")
    except Exception as err:  # ImportError, or a broken installation failing on import
        asked = warn or not isinstance(err, ModuleNotFoundError)
        if asked and not _not_installed_warned:
            detail = "" if isinstance(err, ModuleNotFoundError) else f" (importing it failed: {err})"
            warnings.warn(
                f"use_codecarbon is on but codecarbon is not installed{detail}; emissions are not tracked. "
                "Install it with: pip install 'py-experimenter[codecarbon]', or pass use_codecarbon=False",
                stacklevel=3,
            )
            _not_installed_warned = True
        return False
    return True


def has_codecarbon_section(experiment_file: str | os.PathLike[str]) -> bool:
    """True when the experiment file has a ``PY_EXPERIMENTER.CodeCarbon`` / ``CODECARBON`` section."""
    try:
        with open(experiment_file, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8 (UnicodeDecodeError)
        return False  # loading the configuration reports the problem itself
    section = data.get("PY_EXPERIMENTER") if isinstance(data, dict) else None
    return isinstance(section, dict) and any(key in section for key in ("CodeCarbon", "CODECARBON"))


def warn_once(cause: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``cause`` happens in this process, then at debug."""
    key = (os.getpid(), cause)
    if key in _warned:
        logger.debug(message)
        return
    _warned.add(key)
    logger.warning("%s (further failures of this kind in this process are logged at debug level)", message)


class TrackerTimeout(Exception):
    """A CodeCarbon call did not return within its time limit."""


def call_with_timeout(call: Callable[[], T], seconds: float, what: str) -> T:
    """Run ``call`` in a helper thread and wait at most ``seconds`` for it.

    :raises TrackerTimeout: it is still running (it is left behind, as a daemon thread).
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # handed to the caller's thread below
            outcome["error"] = err

    thread = threading.Thread(target=target, name=f"py-experimenter-codecarbon-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TrackerTimeout(f"codecarbon did not {what} within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")  # type: ignore[return-value]


def tracker_options(settings: Mapping[str, Any], cls: type, codecarbon: Any) -> tuple[dict[str, Any], list[str]]:
    """The keyword arguments for tracker class ``cls`` from the ``CodeCarbon`` section.

    Returns the options and the section's keys this CodeCarbon does not know (left out).
    """
    options = {key: value for key, value in settings.items() if key not in _OUR_KEYS}
    accepted = accepted_keywords(cls)

    def accepts(key: str) -> bool:
        return accepted is None or key in accepted

    unknown = sorted(key for key in options if not accepts(key))
    for key in unknown:
        del options[key]
    if accepted is not None and "output_methods" in accepted:  # CodeCarbon 3: save_to_* are deprecated
        flags = {key: options.pop(key) for key in list(options) if key in _SAVE_FLAGS}
        if "output_methods" not in options:
            method = getattr(codecarbon, "OutputMethod", None)
            options["output_methods"] = [getattr(method, _SAVE_FLAGS[key]) if method else _SAVE_FLAGS[key].lower()
                                         for key, value in flags.items() if _truthy(value)]
    elif accepts("save_to_file"):
        options.setdefault("save_to_file", False)
    if accepts("log_level"):
        options.setdefault("log_level", "error")
    if accepts("country_iso_code") and "country_iso_code" not in options and not _configured_elsewhere(
            "country_iso_code"):
        options["country_iso_code"] = DEFAULT_COUNTRY_ISO_CODE
    return options, unknown


def accepted_keywords(cls: type) -> set[str] | None:
    """Keyword parameters of ``cls`` and of its base classes' constructors; None when they
    name none but take ``**kwargs`` (anything goes)."""
    names: set[str] = set()
    open_ended = False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in parameters:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
            elif p.kind is p.VAR_KEYWORD:
                open_ended = True
    return None if open_ended and not names else names


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


def _configured_elsewhere(key: str) -> bool:
    """True when CodeCarbon's own configuration (env vars, .codecarbon.config) sets ``key``."""
    try:
        config = importlib.import_module("codecarbon.core.config").get_hierarchical_config()
        return bool(config.get(key))
    except Exception:
        return False


class EmissionsRecorder:
    """Measures each experiment with CodeCarbon and stores the figures in ``<table>_codecarbon``.

    :param settings: the experiment file's ``CodeCarbon`` / ``CODECARBON`` section.
    :param call_timeout: seconds one tracker call may take before it is abandoned
        (default: :data:`CALL_TIMEOUT_SECONDS`).

    The executor calls :meth:`start` before an experiment, :meth:`stop` after it (before
    the row is finished) and :meth:`close` when it leaves. None of them raises.
    """

    def __init__(self, settings: Mapping[str, Any], *, call_timeout: float | None = None):
        self.settings = dict(settings)
        self.offline = not (self.settings.get("offline_mode") is False
                            or str(self.settings.get("offline_mode", "")).strip().lower() == "false")
        self.call_timeout = CALL_TIMEOUT_SECONDS if call_timeout is None else call_timeout
        self.store = EmissionsStore()
        self._reset()

    def _reset(self) -> None:
        self._tracker: Any = None
        self._tracker_pid: int | None = None
        self._tasks = 0
        self._measuring = False
        self._disabled = False  # a tracker that cannot be made here is not tried again

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_tracker=None, _tracker_pid=None, _tasks=0, _measuring=False)
        return state

    def start(self) -> None:
        """Start measuring the experiment about to run."""
        self._measuring = False
        try:
            tracker = self._tracker_here()
            if tracker is None:
                return
            if hasattr(tracker, "start_task"):
                call_with_timeout(tracker.start_task, self.call_timeout, "start a task")
            else:
                call_with_timeout(tracker.start, self.call_timeout, "start")
            self._measuring = True
        except Exception as err:
            self._discard(err)
            warn_once(f"start:{type(err).__name__}", f"codecarbon could not start measuring: {_describe(err)}; "
                      f"the experiment runs without emission figures{self._given_up(err)}")

    def stop(self, queue: ExperimentQueue, experiment: Experiment) -> None:
        """Stop measuring and store the figures for ``experiment``'s attempt, if it is still running."""
        if not self._measuring:
            return
        self._measuring = False
        tracker = self._tracker
        try:
            data = self._stop_measuring(tracker)
        except Exception as err:
            self._discard(err)
            warn_once(f"stop:{type(err).__name__}", f"codecarbon could not stop measuring experiment "
                      f"{experiment.id}: {_describe(err)}; no emission figures are stored for it{self._given_up(err)}")
            return
        try:
            stored = self.store.insert(queue, experiment, data, offline=self.offline)
        except Exception as err:
            warn_once(f"insert:{type(err).__name__}", f"the emission figures of experiment {experiment.id} "
                      f"could not be stored in {queue.db.schema.codecarbon.name!r}: {_describe(err)}")
            return
        if not stored:
            logger.info("emission figures of experiment %s attempt %s not stored: the attempt is no longer "
                        "running (its lease expired, or it was reset or taken over)", experiment.id, experiment.attempt)

    def close(self) -> None:
        """Stop this process's tracker (the executor is leaving)."""
        if self._tracker is not None and self._tracker_pid == os.getpid():
            tracker, self._tracker = self._tracker, None
            try:
                call_with_timeout(tracker.stop, self.call_timeout, "stop")
            except Exception as err:
                logger.debug("codecarbon tracker did not stop cleanly: %s", _describe(err))
        self._tracker = None
        self._tasks = 0

    def _stop_measuring(self, tracker: Any) -> Any:
        if hasattr(tracker, "stop_task"):
            data = call_with_timeout(tracker.stop_task, self.call_timeout, "stop a task")
            self._tasks += 1
            if self._tasks >= TASKS_PER_TRACKER:
                self.close()
        else:
            call_with_timeout(tracker.stop, self.call_timeout, "stop")
            data = getattr(tracker, "final_emissions_data", None)
            self._tracker = None
        if data is None:
            raise RuntimeError("codecarbon returned no emissions data (see codecarbon's own log messages)")
        return data

    def _tracker_here(self) -> Any:
        """This process's tracker, made on first use (a forked child never reuses its parent's)."""
        if self._tracker_pid != os.getpid():
            self._reset()
            self._tracker_pid = os.getpid()
        if self._disabled:
            return None
        if self._tracker is None:
            try:
                self._tracker = call_with_timeout(self._make_tracker, self.call_timeout, "create a tracker")
            except Exception as err:
                self._disabled = True
                warn_once(f"create:{type(err).__name__}", f"codecarbon tracker could not be created: "
                          f"{_describe(err)}; emissions are not tracked in this process. Check the CodeCarbon "
                          "section of the experiment file (keys, output_dir, country_iso_code)")
                return None
        return self._tracker

    def _make_tracker(self) -> Any:
        codecarbon = importlib.import_module("codecarbon")
        cls = codecarbon.OfflineEmissionsTracker if self.offline else codecarbon.EmissionsTracker
        options, unknown = tracker_options(self.settings, cls, codecarbon)
        if unknown:
            known = sorted((accepted_keywords(cls) or set()) | set(_OUR_KEYS))
            warn_once(f"keys:{','.join(unknown)}", f"CodeCarbon section: codecarbon "
                      f"{getattr(codecarbon, '__version__', '?')} does not know {unknown}; they are ignored. "
                      f"Known keys: {known}")
        if options.get("output_dir"):
            os.makedirs(str(options["output_dir"]), exist_ok=True)
        level = options.get("log_level")
        if isinstance(level, str) and isinstance(logging.getLevelName(level.upper()), int):
            # CodeCarbon sets this level itself while constructing; set it first so that its
            # construction messages obey it too.
            logging.getLogger("codecarbon").setLevel(level.upper())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            tracker = cls(**options)
        return tracker

    def _discard(self, err: Exception) -> None:
        """Forget a tracker that failed: the next experiment gets a new one, unless it hung
        (then tracking stops in this process: a tracker waiting on the network would hold up
        every experiment by the time limit)."""
        tracker, self._tracker, self._tasks = self._tracker, None, 0
        if isinstance(err, TrackerTimeout):
            self._disabled = True
        elif tracker is not None:
            with contextlib.suppress(Exception):
                call_with_timeout(tracker.stop, min(self.call_timeout, 5.0), "stop")

    def _given_up(self, err: Exception) -> str:
        return "; emissions are no longer tracked in this process" if isinstance(err, TrackerTimeout) else ""


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
