"""The exceptions that bad user input raises, importable without torch.

The CLI reports them as one line (no traceback) for every command, including those that never
import torch (``synth``, ``stats``, ``score``); :mod:`ibs_study.config` and
:mod:`ibs_study.engine.run_dir` raise them and re-export them under their own names.
"""

from __future__ import annotations

__all__ = ["ConfigError", "RunDirError"]


class ConfigError(ValueError):
    """A configuration value, key or preset that is not valid; the message names it."""


class RunDirError(RuntimeError):
    """A run directory that may not be used as asked; the message says why and what to do."""
