"""numba kernels compiled ahead of time into shared libraries, cached on disk, called via ctypes.

A process that runs a numba kernel pays for importing numba and initialising its compiler
(about 0.4 s on a 2-core machine) even when the machine code comes from numba's cache. A
command that scores a handful of images should not. So each C entry point that a kernel
module lists in ``C_SIGNATURES`` (a ``numba.cfunc`` signature per kernel) is compiled once:
numba generates its LLVM IR, llvmlite turns it into an object file, the C compiler links it
into a shared library. Later processes load that library with ctypes (about a millisecond,
numba not imported); ctypes releases the GIL during the call, so threads run kernels in
parallel.

The libraries live in ``$NUMBA_CACHE_DIR/ibs_study`` where that is set, else in the first
writable of ``__pycache__`` next to the kernel module and ``$XDG_CACHE_HOME/ibs_study``
(``~/.cache/ibs_study``): the places numba's own cache uses. Their names carry a hash
of the kernel module's source, this file's, the numba and llvmlite installations, the
Python version and the CPU, so an edit or an upgrade builds a new one. Where no C compiler is found
(or building fails) :func:`load_kernel` returns None and the caller runs the numba kernel
itself.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib
import importlib.util
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["kernel", "load_kernel", "library_path", "cache_dirs"]

_EXPORTED_NAME = "ibs_study_kernel"


def _cpu_identity() -> str:
    """The CPU model and its feature flags (the machine code is compiled for this CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [
                line for line in f.read(1 << 16).splitlines() if line.startswith(("model name", "flags"))
            ]
        return "\n".join(lines[:2])
    except OSError:
        return platform.processor()


def _installed(package: str) -> str:
    """Where ``package`` is installed and when (an upgrade changes it), found without importing it
    (importing numba is what the libraries save)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return f"{package}: not installed"
    return f"{spec.origin} {os.stat(spec.origin).st_mtime_ns}"


def cache_dirs(module_file: Path) -> list[Path]:
    """Where the libraries of a kernel module may live, in order of preference:
    ``$NUMBA_CACHE_DIR/ibs_study`` alone where it is set (as numba's own cache), else
    ``__pycache__`` next to the module, then the user's cache folder."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return [Path(os.environ["NUMBA_CACHE_DIR"]) / "ibs_study"]
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [module_file.parent / "__pycache__", user_cache / "ibs_study"]


def library_path(module: str, name: str, directory: Path) -> Path:
    """The file of kernel ``name`` of ``module`` in ``directory``, named after what it is built from."""
    return directory / _library_name(module, name)


@functools.cache
def _library_name(module: str, name: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"kernel module {module} not found")
    digest = hashlib.sha256()
    for text in (
        Path(spec.origin).read_bytes(),
        Path(__file__).read_bytes(),
        _installed("numba").encode(),
        _installed("llvmlite").encode(),
        f"{sys.version_info[:2]} {platform.machine()} {_cpu_identity()}".encode(),
    ):
        digest.update(hashlib.sha256(text).digest())
    return f"{module.rsplit('.', 1)[-1]}.{name}-{digest.hexdigest()[:16]}.so"


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def _c_compiler() -> str | None:
    import shutil
    import sysconfig

    configured = (sysconfig.get_config_var("CC") or "").split()
    for candidate in (os.environ.get("CC"), configured[0] if configured else None, "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _build(module: str, name: str, target: Path, compiler: str) -> None:
    """Compile ``module.C_SIGNATURES[name]`` into the shared library ``target`` (written atomically)."""
    import tempfile
    import warnings

    import llvmlite.binding as llvm
    import numba

    entry, signature = importlib.import_module(module).C_SIGNATURES[name]
    with warnings.catch_warnings():  # numba's cache does not apply to code compiled for a cfunc
        warnings.simplefilter("ignore", numba.NumbaWarning)
        compiled = numba.cfunc(signature, nogil=True)(entry)
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    ir_module = llvm.parse_assembly(compiled.inspect_llvm())
    ir_module.get_function(compiled.native_name).name = _EXPORTED_NAME
    # numba's error paths (unreachable: the kernels cannot raise) name numba's runtime, which a
    # process without numba lacks; weak references resolve to null instead of failing the load
    for value in (*ir_module.functions, *ir_module.global_variables):
        if value.is_declaration and not value.name.startswith("llvm."):
            value.linkage = llvm.Linkage.external_weak
    machine = llvm.Target.from_triple(ir_module.triple).create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3, reloc="pic"
    )
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        obj = Path(scratch) / "kernel.o"
        obj.write_bytes(machine.emit_object(ir_module))
        built = Path(scratch) / target.name
        subprocess.run([compiler, "-shared", "-o", str(built), str(obj)], check=True, capture_output=True)
        os.replace(built, target)
    for stale in target.parent.glob(f"{target.name.rsplit('-', 1)[0]}-*.so"):
        if stale != target:
            stale.unlink(missing_ok=True)


@functools.cache
def load_kernel(module: str, name: str, argtypes: tuple[type, ...]) -> ctypes._CFuncPtr | None:
    """The C entry point ``name`` of kernel module ``module`` (see ``C_SIGNATURES`` there), built
    on first use; None where it cannot be built (the caller then runs the numba kernel).

    Args:
        module, name: which kernel.
        argtypes: the ctypes of its C arguments (``c_void_p`` for pointers, ``c_int64``), as
            in its signature.

    Returns:
        A ctypes function returning ``int64`` that releases the GIL while it runs, or None.
    """
    spec = importlib.util.find_spec(module)
    directories = cache_dirs(Path(spec.origin))
    for directory in directories:
        path = library_path(module, name, directory)
        if path.is_file():
            try:
                return _bind(path, argtypes)
            except OSError as err:  # unloadable (another machine's?): built again below
                logger.info("cannot load %s (%s); building it again", path, err)
    compiler = _c_compiler()
    directory = next((d for d in directories if _writable(d)), None)
    if compiler is None or directory is None:
        logger.info("no C compiler or no writable cache folder: %s.%s runs through numba's JIT", module, name)
        return None
    path = library_path(module, name, directory)
    logger.debug("compiling %s.%s once into %s", module, name, path)
    try:
        _build(module, name, path, compiler)
    except (OSError, subprocess.CalledProcessError, RuntimeError) as err:
        logger.info("building %s failed (%s): %s.%s runs through numba's JIT", path, err, module, name)
        return None
    return _bind(path, argtypes)


def _bind(path: Path, argtypes: tuple[type, ...]) -> ctypes._CFuncPtr:
    function = getattr(ctypes.CDLL(str(path)), _EXPORTED_NAME)
    function.restype = ctypes.c_int64
    function.argtypes = argtypes
    return function


@functools.cache
def kernel(module: str, name: str, argtypes: tuple[type, ...]) -> Callable[..., int]:
    """Kernel ``name`` of ``module``, called with the numba kernel's arguments (arrays, integers):
    the native library (:func:`load_kernel`; arrays passed as pointers to their data, so they
    must be C-contiguous and of the signature's dtype), else the numba kernel itself."""
    native = load_kernel(module, name, argtypes)
    if native is None:
        return getattr(importlib.import_module(module), name)

    def call(*args: np.ndarray | int) -> int:
        return native(*(arg.ctypes.data if isinstance(arg, np.ndarray) else arg for arg in args))

    return call
