"""miniprob: a small, fast probabilistic programming library on PyTorch, in the style of Pyro.

``import miniprob as pyro`` runs Pyro-style code for everything miniprob implements.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> def model(data):
    ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(data)):
    ...         pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)
    >>> model(torch.randn(5))
"""

from . import distributions, infer, optim, poutine, settings, util
from .blackbox import black_box
from .checkpoint import load_checkpoint, save_checkpoint
from .deferred import Constrained, DeferredDistribution, deferred
from .flat import FlatView, ParamVector, ravel
from .params import ParamStore, clear_param_store, get_param_store
from .poutine.handlers import condition
from .poutine.plate import plate
from .primitives import deterministic, factor, module, param, sample
from .util import set_rng_seed
from .validation import enable_validation, validation_enabled

__version__ = "0.1.0"

__all__ = [
    "Constrained",
    "DeferredDistribution",
    "FlatView",
    "ParamStore",
    "ParamVector",
    "black_box",
    "clear_param_store",
    "condition",
    "deferred",
    "deterministic",
    "distributions",
    "enable_validation",
    "factor",
    "get_param_store",
    "infer",
    "load_checkpoint",
    "module",
    "optim",
    "param",
    "plate",
    "poutine",
    "ravel",
    "sample",
    "save_checkpoint",
    "set_rng_seed",
    "settings",
    "util",
    "validation_enabled",
]
