"""The exceptions that bad user input raises, importable without torch.

Every one of them derives from :class:`InputError`; the CLI reports an ``InputError`` as one
line ``ibs-study COMMAND: error: MESSAGE`` with exit status 2 (the traceback only with ``-v``)
for every command, including those that never import torch (``synth``, ``stats``, ``score``).
:class:`RunsFailedError` (subprocess runs that failed; their logs say why) is reported the same
way with exit status 1. Anything else is a bug and keeps its traceback. :mod:`ibs_study.config` and
:mod:`ibs_study.engine.run_dir` re-export the errors they raise under their own names.
"""

from __future__ import annotations

__all__ = ["InputError", "ConfigError", "RunDirError", "DataError", "CheckpointError", "RunsFailedError"]


class InputError(Exception):
    """Input the user can correct; the message names the culprit and what to do."""


class ConfigError(InputError, ValueError):
    """A configuration value, key or preset that is not valid; the message names it."""


class RunDirError(InputError, RuntimeError):
    """A run directory that may not be used as asked; the message says why and what to do."""


class DataError(InputError, ValueError):
    """A dataset, prediction or results file that cannot be read; the message names the file
    (and the image / segment id) and what is wrong."""


class CheckpointError(InputError, RuntimeError):
    """A checkpoint that is missing, truncated or made by another model; the message names it."""


class RunsFailedError(RuntimeError):
    """Subprocess runs of a grid that exited with an error; the message names each run and the
    log file that says why."""
