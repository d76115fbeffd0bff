"""Files: atomic writes, and loads that run no code from the file.

A write goes to a temporary file beside its target, is flushed and fsynced, then renamed over
the target: a crash mid-write leaves the old file intact, never a half-written one. The target
gets the permissions ``torch.save`` would give it (those of the file it replaces, or
``0o666`` less the process umask for a new one). The temporary file carries the target's name
and the writer's process id, so the next save of the same path removes those a killed writer
left behind.

A load unpickles with ``torch.load(weights_only=True)``: tensors, numbers, strings, the
containers of Python, NumPy arrays (the RNG state) and the constraints of
``torch.distributions`` (and any subclass defined in miniprob), nothing else. A file holding
anything more (a pickle that would call a function on load) raises ``ValueError`` and runs
nothing. ``trusted=True`` unpickles everything, running whatever code the file names: only for
files you wrote yourself (a custom constraint class needs it).

Example::

    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "state.pt")
    >>> atomic_save({"w": torch.zeros(2)}, path)
    >>> safe_load(path, "state")["w"].tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

import io
import os
import pickle
import re
import secrets
import stat
import threading
from typing import Any, BinaryIO

import torch
from torch.distributions import constraints

_TMP_SUFFIX = ".miniprob-tmp"
# Temporary files of saves in progress in this process: never removed as leftovers.
_IN_PROGRESS: set[str] = set()
_IN_PROGRESS_LOCK = threading.Lock()


def checked_path(path: str | os.PathLike, where: str) -> str:
    """``path`` as a string, or ``ValueError``/``FileNotFoundError`` saying why no file can
    be written there (an empty path, a directory, a folder that does not exist).

    Example::

        >>> checked_path("", "save")
        Traceback (most recent call last):
        ...
        ValueError: save: the path is empty; expected a file name
    """
    path = os.fspath(path)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path:
        raise ValueError(f"{where}: the path is empty; expected a file name")
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)) or os.path.isdir(path):
        raise ValueError(f"{where}: {path!r} is a directory; expected a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{where}: cannot write {path!r}: the folder {folder!r} does not exist"
        )
    return path


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def _remove_leftovers(path: str) -> None:
    """Remove the temporary files that saves of ``path`` killed mid-write left behind: those
    of processes no longer running, none of this process's saves in progress."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = _temp_prefix(path)
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.[0-9a-f]{16}" + re.escape(_TMP_SUFFIX))
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        full = os.path.join(folder, name)
        pid = int(match.group(1))
        with _IN_PROGRESS_LOCK:
            if full in _IN_PROGRESS:
                continue
        if pid != os.getpid() and _running(pid):
            continue
        try:
            os.unlink(full)
        except OSError:
            pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or no way to tell: leave its file alone
    return True


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush, fsync, then rename over it."""
    path = checked_path(path, "save")
    folder = os.path.dirname(os.path.abspath(path))
    _remove_leftovers(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # kept, as open(path, "wb") keeps it
    except FileNotFoundError:
        mode = None
    tmp = os.path.join(
        folder, f"{_temp_prefix(path)}{os.getpid()}.{secrets.token_hex(8)}{_TMP_SUFFIX}"
    )
    with _IN_PROGRESS_LOCK:
        _IN_PROGRESS.add(tmp)
    try:
        # 0o666 less the umask, applied by the kernel: what torch.save's open() gives.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                if mode is not None:
                    os.fchmod(f.fileno(), mode)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    finally:
        with _IN_PROGRESS_LOCK:
            _IN_PROGRESS.discard(tmp)
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    path = checked_path(path, "save")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


# ---- loading ---------------------------------------------------------------------------------


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def _numpy_globals() -> list[Any]:
    try:
        import numpy as np
    except ImportError:
        return []
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    # The dtypes of a NumPy RNG state and of ordinary numeric arrays.
    names = ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    names += ("float16", "float32", "float64", "complex64", "complex128")
    dtype_classes = {type(np.dtype(getattr(np, n))) for n in names}
    # Files written under NumPy 1 name the function by its old module.
    old_name = (reconstruct, "numpy.core.multiarray._reconstruct")
    return [reconstruct, old_name, np.ndarray, np.dtype, *dtype_classes]


def safe_globals() -> list[Any]:
    """What a miniprob file may hold besides torch's defaults: the constraint classes of
    ``torch.distributions`` and of miniprob, NumPy arrays, and the builtin types that
    optimizer group keys name.

    Example::

        >>> from torch.distributions import constraints
        >>> type(constraints.positive) in safe_globals()
        True
    """
    classes = [
        c
        for c in _subclasses(constraints.Constraint)
        if c.__module__.startswith(("torch.distributions", "miniprob"))
        and not issubclass(c, property)
    ]
    return [*classes, *_numpy_globals(), float, int, bool, complex, str, tuple, type(None)]


_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _refusal(what: str, error: Exception) -> ValueError:
    match = _UNSUPPORTED.search(str(error))
    found = f" ({match.group(1)})" if match else ""
    detail = "" if match else f": {str(error).strip().splitlines()[-1]}"
    return ValueError(
        f"{what} holds objects miniprob will not load{found}{detail}; miniprob loads only "
        "tensors, numbers, strings, containers, NumPy arrays and torch constraints. Pass "
        "trusted=True only for a file you wrote yourself: it runs whatever code the file names"
    )


def safe_load(
    source: str | os.PathLike | BinaryIO, what: str, map_location: Any = None, trusted: bool = False
) -> Any:
    """Unpickle ``source`` with ``torch.load(weights_only=True)`` and miniprob's
    :func:`safe_globals`; a file that holds anything else raises ``ValueError`` naming
    ``what`` and runs nothing. ``trusted=True`` loads any pickle (and runs what it names).

    Example::

        >>> import io, torch
        >>> buffer = io.BytesIO()
        >>> torch.save({"c": constraints.positive}, buffer); _ = buffer.seek(0)
        >>> safe_load(buffer, "buffer")["c"]
        GreaterThan(lower_bound=0.0)
    """
    if trusted:
        return torch.load(source, map_location=map_location, weights_only=False)
    with torch.serialization.safe_globals(safe_globals()):
        try:
            return torch.load(source, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise _refusal(what, e) from None


def check_loadable(obj: Any, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` if ``obj`` could not be read back by
    :func:`safe_load` (checked by saving and loading it).

    Example::

        >>> check_loadable({"epoch": 3}, "extra")
        >>> try:
        ...     check_loadable(object(), "extra")
        ... except ValueError as e:
        ...     print(str(e)[:42])
        extra holds objects miniprob will not load
    """
    buffer = io.BytesIO()
    try:
        torch.save(obj, buffer)
    except Exception as e:
        raise ValueError(f"{what} cannot be saved: {e}") from e
    buffer.seek(0)
    with torch.serialization.safe_globals(safe_globals()):
        try:
            torch.load(buffer, weights_only=True)
        except pickle.UnpicklingError as e:
            match = _UNSUPPORTED.search(str(e))
            found = f" ({match.group(1)})" if match else ""
            raise ValueError(
                f"{what} holds objects miniprob will not load{found}; it may hold tensors, "
                "numbers, strings, None, NumPy arrays, torch constraints, and lists, tuples, "
                "sets and dicts of them"
            ) from None
