"""Optimizers (``miniprob.optim``): Pyro-style wrappers over ``torch.optim``, ``ClippedAdam``,
learning-rate schedulers, multi-optimizers and ``DistributedOptimizer`` (data-parallel SVI).

Example::

    >>> from miniprob.optim import Adam
    >>> opt = Adam({"lr": 0.001, "betas": (0.90, 0.999)}, clip_args={"clip_norm": 10.0})
"""

from __future__ import annotations

from typing import Any

import torch

from . import multi
from .clipped_adam import ClippedAdam as _ClippedAdamTorch
from .distributed import DistributedOptimizer, DistributedStepError
from .lr_scheduler import PyroLRScheduler
from .multi import MixedMultiOptimizer, MultiOptimizer, PyroMultiOptimizer, TorchMultiOptimizer
from .optim import ClipArgs, OptimArgs, PyroOptim


def _wrap(constructor: type) -> type:
    def __init__(self, optim_args: OptimArgs, clip_args: ClipArgs | None = None) -> None:
        PyroOptim.__init__(self, constructor, optim_args, clip_args)

    name = constructor.__name__
    doc = f"Pyro-style ``{name}``: ``{name}(optim_args, clip_args=None)``."
    return type(constructor.__name__, (PyroOptim,), {"__init__": __init__, "__doc__": doc})


def _wrap_scheduler(constructor: type) -> type:
    def __init__(self, optim_args: dict, clip_args: dict | None = None) -> None:
        PyroLRScheduler.__init__(self, constructor, optim_args, clip_args)

    doc = f"Pyro-style ``{constructor.__name__}`` scheduler over a torch optimizer."
    return type(constructor.__name__, (PyroLRScheduler,), {"__init__": __init__, "__doc__": doc})


_OPTIMIZERS = [
    "Adam",
    "AdamW",
    "SGD",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Adamax",
    "NAdam",
    "RAdam",
    "ASGD",
    "Rprop",
    "SparseAdam",
]
_SCHEDULERS = [
    "ExponentialLR",
    "StepLR",
    "MultiStepLR",
    "ReduceLROnPlateau",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
    "LambdaLR",
    "MultiplicativeLR",
    "LinearLR",
    "ConstantLR",
    "PolynomialLR",
]
_wrapped: dict[str, Any] = {
    n: _wrap(getattr(torch.optim, n)) for n in _OPTIMIZERS if hasattr(torch.optim, n)
}
_wrapped["ClippedAdam"] = _wrap(_ClippedAdamTorch)
_wrapped.update(
    {
        n: _wrap_scheduler(getattr(torch.optim.lr_scheduler, n))
        for n in _SCHEDULERS
        if hasattr(torch.optim.lr_scheduler, n)
    }
)
globals().update(_wrapped)

__all__ = [
    *sorted(_wrapped),
    "DistributedOptimizer",
    "DistributedStepError",
    "MixedMultiOptimizer",
    "MultiOptimizer",
    "PyroLRScheduler",
    "PyroMultiOptimizer",
    "PyroOptim",
    "TorchMultiOptimizer",
    "multi",
]
