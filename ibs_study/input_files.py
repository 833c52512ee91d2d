"""Reading a file the user gives (a dataset JSON, a results or metrics JSON), torch-free.

A file that is missing, unreadable, not UTF-8, not JSON or not shaped as expected raises
:class:`~ibs_study.errors.DataError` naming the file (and the key path inside it) and what to do,
so every command reports it as one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ibs_study.errors import DataError, InputError

__all__ = ["read_text", "read_json", "expect"]


def read_text(path: str | os.PathLike, what: str, error: type[InputError] = DataError) -> str:
    """The UTF-8 text of the file ``path``; ``what`` names it in errors (e.g. "config file").

    Raises:
        error: naming ``path``: it does not exist, is a folder, cannot be read or is not UTF-8.
    """
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found; check the path") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}; give the file") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror or err})") from err
    except UnicodeDecodeError as err:
        raise error(f"{path}: the {what} is not UTF-8 text (byte {err.start}); save it as UTF-8") from err


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The parsed content of the JSON file ``path``; ``what`` names it in errors (e.g. "results JSON").

    Raises:
        DataError: naming ``path``: it does not exist, is a folder, cannot be read, is not UTF-8
            or is not valid JSON (with the line and column of the first error).
    """
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{Path(path)}: the {what} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "it may be truncated: write it again"
        ) from err


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}


def expect(value: Any, types: type | tuple[type, ...], where: str, path: str | os.PathLike) -> Any:
    """``value`` itself if it is an instance of ``types``; else :class:`DataError` naming ``path``
    and ``where`` (the key path inside the file, e.g. ``annotations[3].segments_info``).

    ``bool`` is not accepted where a number is expected."""
    types = types if isinstance(types, tuple) else (types,)
    number_wanted = any(t in (int, float) for t in types)
    if isinstance(value, types) and not (number_wanted and isinstance(value, bool)):
        return value
    wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise DataError(f"{path}: {where} must be {wanted}, got {shown}")
