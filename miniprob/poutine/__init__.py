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
from .handlers import block, condition, mask, replay, scale, seed, substitute, trace
from .plate import plate, prune_subsample_sites
from .trace_struct import Trace, scale_and_mask

__all__ = [
    "Messenger",
    "Trace",
    "apply_stack",
    "block",
    "condition",
    "enable_validation",
    "get_mask",
    "get_stack",
    "is_validation_enabled",
    "mask",
    "plate",
    "prune_subsample_sites",
    "replay",
    "scale",
    "scale_and_mask",
    "seed",
    "substitute",
    "trace",
]
