"""Checkpoints: everything a training run needs to continue, in one file.

``save_checkpoint`` writes the current ParamStore (unconstrained values and constraints), the
optimizer's and scheduler's state, the random number generators of torch, ``random`` and NumPy,
and any ``extra`` object you pass (in a data-parallel run, every rank's RNG states: rank 0
writes, every rank resumes). ``load_checkpoint`` puts all of it back, so that N steps,
a save, a load (in a fresh process too) and M more steps give bit for bit the parameters of
N + M steps.

Writes are atomic: the file is written beside ``path``, flushed, fsynced and renamed over it,
so a crash mid-save leaves the previous checkpoint intact. The file carries a SHA-256 of its
contents; a truncated or corrupted file raises ``ValueError`` and loads nothing.

``nn.Module`` networks: a parameter the store already holds is updated in place, so a module
registered with ``pyro.module`` before loading trains on with the loaded values. In a fresh
process, pass ``modules={"name": net}`` (the names given to ``pyro.module``): the module's own
parameters take the loaded values and become the store's tensors.

Loading runs no code from the file: the contents are read as weights only (tensors, numbers,
strings, containers, NumPy arrays and torch constraints), and a file holding any other object
raises ``ValueError`` before anything changes. The SHA-256 only detects damage: whoever writes a
file computes it. So ``extra`` may hold only what such a load can read back, checked when saving.
``load_checkpoint(..., trusted=True)`` unpickles anything, running whatever code the file names:
pass it only for a file you wrote yourself (one holding a custom constraint class, say).

Example::

    >>> import os, tempfile, torch, miniprob as pyro
    >>> from miniprob.checkpoint import load_checkpoint, save_checkpoint
    >>> from miniprob.optim import Adam
    >>> w = pyro.param("w", torch.tensor(1.0))
    >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> save_checkpoint(path, optim=Adam({"lr": 0.1}), extra={"epoch": 3})
    >>> pyro.clear_param_store()
    >>> load_checkpoint(path)
    {'epoch': 3}
    >>> pyro.param("w").item()
    1.0
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Mapping
from typing import Any

import torch

from .atomic import atomic_write, check_loadable, checked_path, safe_load
from .optim.distributed import DistributedOptimizer
from .optim.lr_scheduler import PyroLRScheduler
from .optim.optim import PyroOptim, check_optim_state
from .params import (
    ParamStore,
    _transform_for,
    canonical_constraint,
    get_param_store,
    module_param_name,
)
from .util import check_rng_state, get_rng_state, set_rng_state

_MAGIC = b"MINIPROB-CHECKPOINT\n"
_HEADER = struct.Struct(">Q32s")  # payload length, SHA-256 of the payload
_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike,
    optim: PyroOptim | None = None,
    scheduler: PyroLRScheduler | None = None,
    extra: Any = None,
) -> None:
    """Write the current ParamStore, ``optim``'s and ``scheduler``'s state, the RNG states and
    ``extra`` to ``path``, atomically.

    ``scheduler`` is a ``miniprob.optim`` scheduler (which is also the optimizer given to
    ``SVI``); its optimizers' state is saved with its schedulers' own state. ``extra`` may hold
    tensors, numbers, strings, None, NumPy arrays and lists, tuples, sets and dicts of them
    (what a weights-only load reads back); anything else raises ``ValueError`` and nothing is
    written.

    With a :class:`~miniprob.optim.DistributedOptimizer` as ``optim`` the save is collective:
    every rank calls it, rank 0 writes the file (with every rank's RNG state) and every rank
    returns once it is written.
    """
    path = checked_path(path, "save_checkpoint")
    _check_types("save_checkpoint", optim, scheduler)
    if extra is not None:
        check_loadable(extra, "save_checkpoint: extra=")
    state = {
        "version": _VERSION,
        "params": get_param_store().get_state(),
        "optim": None if optim is None else optim.get_state(),
        "scheduler": None
        if scheduler is None
        else {"optim": scheduler.get_state(), "schedulers": scheduler.get_scheduler_state()},
        "rng": get_rng_state(),
        "extra": extra,
    }
    if isinstance(optim, DistributedOptimizer):
        optim._save_checkpoint(state, lambda state: atomic_write(path, _encode(state)))
    else:
        atomic_write(path, _encode(state))


def _encode(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return _MAGIC + _HEADER.pack(len(payload), hashlib.sha256(payload).digest()) + payload


def _check_types(where: str, optim: Any, scheduler: Any) -> None:
    if optim is not None and not isinstance(optim, PyroOptim):
        raise TypeError(f"{where}: optim must be a miniprob.optim optimizer, got {optim!r}")
    if scheduler is not None and not isinstance(scheduler, PyroLRScheduler):
        raise TypeError(f"{where}: scheduler must be a miniprob.optim scheduler, got {scheduler!r}")


def load_checkpoint(
    path: str | os.PathLike,
    optim: PyroOptim | None = None,
    scheduler: PyroLRScheduler | None = None,
    modules: Mapping[str, torch.nn.Module] | None = None,
    map_location: Any = None,
    trusted: bool = False,
) -> Any:
    """Restore what :func:`save_checkpoint` wrote to ``path``; returns its ``extra``.

    The current ParamStore becomes the saved one (parameters not in the checkpoint are
    removed); a parameter the store already holds with the same shape is updated in place, as
    are the parameters of ``modules`` (``{name given to pyro.module: module}``). ``optim`` and
    ``scheduler`` get their saved state; the RNGs are restored. Everything is checked before
    anything changes (the parameters, the optimizer and scheduler state against the parameters'
    shapes, the RNG states): a file that cannot be loaded raises ``ValueError`` naming the part
    and changes nothing. The file is read as weights only and runs no code (see the module
    docstring); ``trusted=True`` unpickles anything and runs what the file names: only for a
    file you wrote.

    With a :class:`~miniprob.optim.DistributedOptimizer` as ``optim``, each rank gets back the
    RNG state it saved (the world size must be the one that saved it); without one, the RNGs
    get rank 0's.
    """
    _check_types("load_checkpoint", optim, scheduler)
    path = os.fspath(path)
    state = _read(path, map_location, trusted)
    store = get_param_store()
    targets = _in_place_targets(path, state["params"], store, modules or {})
    if optim is not None and state["optim"] is None:
        raise ValueError(f"checkpoint {path!r} holds no optimizer state (saved without optim=)")
    if scheduler is not None and state["scheduler"] is None:
        raise ValueError(f"checkpoint {path!r} holds no scheduler state (saved without scheduler=)")
    _check_parts(path, state)
    if isinstance(optim, DistributedOptimizer):
        rng = optim._rng_state(state, path)
        try:
            check_rng_state(rng)
        except ValueError as e:
            raise ValueError(f"checkpoint {path!r}: this rank's {e}") from None
    else:
        rng = state["rng"]
    _restore_params(store, state["params"], targets)
    if optim is not None:
        optim.set_state(state["optim"])
    if scheduler is not None:
        scheduler.set_state(state["scheduler"]["optim"])
        scheduler.set_scheduler_state(state["scheduler"]["schedulers"])
    set_rng_state(rng)
    return state["extra"]


# ---- the file --------------------------------------------------------------------------------


def _read(path: str, map_location: Any, trusted: bool) -> dict:
    """The checked contents of a checkpoint file, or ``ValueError`` saying what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read checkpoint {path!r}: {e}") from e
    if not data.startswith(_MAGIC):
        raise ValueError(
            f"{path!r} is not a miniprob checkpoint (it does not start with the checkpoint header)"
        )
    start = len(_MAGIC) + _HEADER.size
    if len(data) < start:
        raise ValueError(f"checkpoint {path!r} is truncated: its header is incomplete")
    length, digest = _HEADER.unpack(data[len(_MAGIC) : start])
    payload = data[start:]
    if len(payload) != length:
        raise ValueError(
            f"checkpoint {path!r} is truncated or has trailing bytes: expected {length} bytes "
            f"of contents, found {len(payload)}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"checkpoint {path!r} is corrupted: its SHA-256 checksum does not match")
    try:
        state = safe_load(io.BytesIO(payload), f"checkpoint {path!r}", map_location, trusted)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"checkpoint {path!r} cannot be unpickled: {e}") from e
    _check_structure(path, state)
    return state


def _check_structure(path: str, state: Any) -> None:
    def bad(what: str) -> ValueError:
        return ValueError(f"checkpoint {path!r} is malformed: {what}")

    keys = {"version", "params", "optim", "scheduler", "rng", "extra"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise bad(f"expected a dict with the keys {sorted(keys)}")
    if state["version"] != _VERSION:
        raise bad(f"version {state['version']!r}, this miniprob reads version {_VERSION}")
    params = state["params"]
    if not isinstance(params, dict) or set(params) != {"params", "constraints"}:
        raise bad("'params' is not a ParamStore state")
    for name, value in params["params"].items():
        if not isinstance(value, torch.Tensor):
            raise bad(f"param '{name}' is a {type(value).__name__}, not a tensor")
        if name not in params["constraints"]:
            raise bad(f"param '{name}' has no constraint")
        try:
            _transform_for(name, params["constraints"][name])
        except ValueError as e:
            raise bad(str(e)) from None
    for key in ("optim", "scheduler"):
        if state[key] is not None and not isinstance(state[key], dict):
            raise bad(f"'{key}' is a {type(state[key]).__name__}, not a dict")
    if not isinstance(state["rng"], dict) or "torch" not in state["rng"]:
        raise bad("'rng' holds no torch RNG state")


def _check_parts(path: str, state: dict) -> None:
    """Check the optimizer, scheduler and RNG parts against each other and the saved
    parameters, so that restoring them cannot fail halfway."""
    shapes = {name: tuple(v.shape) for name, v in state["params"]["params"].items()}
    try:
        if state["optim"] is not None:
            check_optim_state(state["optim"], shapes, "'optim'")
        if state["scheduler"] is not None:
            sched = state["scheduler"]
            if not isinstance(sched, dict) or set(sched) != {"optim", "schedulers"}:
                raise ValueError("'scheduler': expected a dict with 'optim' and 'schedulers'")
            check_optim_state(sched["optim"], shapes, "'scheduler'")
            inner = sched["schedulers"]
            if not isinstance(inner, dict) or not {"epoch", "joined", "schedulers"} <= set(inner):
                raise ValueError(
                    "'scheduler': its schedulers' state is not a dict with 'epoch', 'joined' "
                    "and 'schedulers'"
                )
        check_rng_state(state["rng"])
    except ValueError as e:
        raise ValueError(f"checkpoint {path!r}: {e}") from None


# ---- restoring -------------------------------------------------------------------------------


def _in_place_targets(
    path: str, params_state: dict, store: ParamStore, modules: Mapping[str, torch.nn.Module]
) -> dict[str, torch.Tensor]:
    """The existing tensors to update in place, by param name (checked, nothing changed yet)."""
    saved = params_state["params"]
    targets: dict[str, torch.Tensor] = {}
    for name in saved:
        if name in store:
            leaf = store.unconstrained(name)
            if leaf.shape == saved[name].shape and leaf.dtype == saved[name].dtype:
                targets[name] = leaf
    for module_name, module in modules.items():
        for param_name, p in module.named_parameters():
            name = module_param_name(module_name, param_name)
            if name not in saved:
                continue
            if p.shape != saved[name].shape:
                raise ValueError(
                    f"checkpoint {path!r}: param '{name}' has shape {tuple(saved[name].shape)} but "
                    f"the module's {param_name} has shape {tuple(p.shape)}"
                )
            targets[name] = p
    return targets


def _restore_params(store: ParamStore, params_state: dict, targets: dict) -> None:
    saved = params_state["params"]
    # Constraints and transforms first: what can fail does so before the store changes.
    constraints_ = {n: canonical_constraint(params_state["constraints"][n]) for n in saved}
    transforms = {n: _transform_for(n, c) for n, c in constraints_.items()}
    store.clear()
    with torch.no_grad():
        for name, value in saved.items():
            leaf = targets.get(name)
            if leaf is None:
                leaf = value.detach().clone()
            else:
                leaf.copy_(value)
                leaf.grad = None
            store._register(name, leaf, constraints_[name], transforms[name])
