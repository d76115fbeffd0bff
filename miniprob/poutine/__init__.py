"""Effect handlers (``miniprob.poutine``): trace, replay, block, condition, scale, mask, seed,
substitute, and the plate machinery.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> def model():
    ...     return pyro.sample("x", dist.Normal(0.0, 1.0))
    >>> poutine.trace(poutine.condition(model, data={"x": torch.tensor(1.0)})).get_trace(
    ...     ).nodes["x"]["is_observed"]
    True
"""

from ..runtime import Messenger, apply_stack, get_mask, get_stack
from ..validation import enable_validation, is_validation_enabled

# Pyro's module paths (``pyro.poutine.runtime.effectful``, ``pyro.poutine.messenger.Messenger``,
# ...), reachable as attributes as in Pyro.
from . import (  # noqa: F401
    block_messenger,
    condition_messenger,
    indep_messenger,
    mask_messenger,
    messenger,
    plate_messenger,
    replay_messenger,
    runtime,
    scale_messenger,
    seed_messenger,
    substitute_messenger,
    trace_messenger,
    util,
)
from .enum_messenger import enum, markov
from .escape import NonlocalExit, escape, queue
from .handlers import block, condition, mask, replay, scale, seed, substitute, trace
from .plate import plate, prune_subsample_sites
from .plate_helpers import block_plate
from .reparam_messenger import reparam
from .rewrite import do, equalize, infer_config, lift, uncondition
from .scope import name_count, scope
from .trace_struct import Trace, scale_and_mask

__all__ = [
    "Messenger",
    "NonlocalExit",
    "Trace",
    "apply_stack",
    "block",
    "block_plate",
    "condition",
    "do",
    "enum",
    "equalize",
    "escape",
    "get_stack",
    "infer_config",
    "lift",
    "markov",
    "enable_validation",
    "get_mask",
    "get_stack",
    "is_validation_enabled",
    "mask",
    "name_count",
    "plate",
    "prune_subsample_sites",
    "queue",
    "reparam",
    "replay",
    "scale",
    "scale_and_mask",
    "scope",
    "seed",
    "substitute",
    "trace",
    "uncondition",
]
