"""Atomic files and folders: a reader sees the old version or the new one, never a mix.

A file is written to a temporary name in its own folder (``NAME.<pid>.tmp``), flushed,
``fsync``-ed and renamed over ``NAME``; a write that fails removes its temporary file and
leaves the old ``NAME`` whole. A folder is written as a temporary folder beside it
(``.NAME.<pid>.tmp``) and swapped in once complete. Leftovers of a killed writer end in
``.tmp``; :func:`remove_temp_files` removes them. Importable without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "write_text_atomic",
    "write_json_atomic",
    "atomic_folder",
    "remove_temp_files",
]

TEMP_SUFFIX = ".tmp"


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` (``mode`` ``"w"`` or ``"wb"``); on a clean exit it
    is flushed, fsync-ed and renamed to ``path``. On an exception the temporary file is removed,
    ``path`` is left as it was and the exception propagates."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (a trailing newline) to ``path`` atomically (:func:`atomic_write`)."""
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, replaced: Collection[str] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on a clean exit it replaces ``target``.

    The old ``target`` is removed only once the new folder is complete. Entries of the old folder
    that the new one lacks are carried over first (hard links, or copies), except those named in
    ``replaced`` (what the writer owns: its old versions go). On an exception the temporary
    folder is removed and ``target`` stays as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_temp_files(target.parent, target.name)
    tmp = target.with_name(f".{target.name}.{os.getpid()}{TEMP_SUFFIX}")
    tmp.mkdir()
    try:
        yield tmp
        for entry in sorted(target.iterdir()) if target.is_dir() else []:
            new = tmp / entry.name
            if entry.name in replaced or new.exists():
                continue
            if entry.is_dir():
                shutil.copytree(entry, new, copy_function=_link_or_copy)
            else:
                _link_or_copy(entry, new)
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
        old = target.with_name(f".{target.name}.{os.getpid()}.old{TEMP_SUFFIX}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_folder(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def remove_temp_files(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove what killed writers left in ``folder``: the temporary files and folders of
    :func:`atomic_write` and :func:`atomic_folder` (those of the entry ``name`` only, if given).
    A folder whose swap was cut between its two renames is restored from the old version it had
    moved aside. Returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if not path.name.endswith(TEMP_SUFFIX):
            continue
        if name is not None and not path.name.lstrip(".").startswith(f"{name}."):
            continue
        stem = path.name[: -len(TEMP_SUFFIX)]
        if path.is_dir() and stem.startswith(".") and stem.endswith(".old"):
            original = folder / stem[1:].rsplit(".", 2)[0]
            if not original.exists():
                os.replace(path, original)
                continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed
