"""The statements models are written in: ``sample``, ``param``, ``module``, ``deterministic``,
``factor`` (and ``plate``, from :mod:`miniprob.poutine.plate`).

Outside any handler they act directly, as in Pyro: ``sample`` draws (or returns ``obs``) and
``param`` reads or creates a parameter in the current store.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> pyro.clear_param_store()
    >>> loc = pyro.param("loc", torch.tensor(0.5))
    >>> pyro.sample("x", dist.Normal(loc, 1.0), obs=torch.tensor(2.0)).item()
    2.0
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.distributions import Distribution, constraints

from .distributions.delta import Delta
from .distributions.unit import Unit
from .params import _CURRENT, module_param_name
from .poutine.handlers import mask
from .runtime import _STACK, apply_stack, new_message
from .validation import _ENABLED, as_observation, check_observed

# Values that are mistakes at a sample site, refused at once (numbers, tensors, names).
_NEVER_DISTRIBUTIONS = (numbers.Number, torch.Tensor, str, bytes)


def _as_distribution(name: str, fn: Any) -> Distribution:
    resolve = getattr(fn, "_miniprob_resolve", None)
    if resolve is not None:
        return resolve()
    if _STACK.get() and not (callable(fn) or isinstance(fn, _NEVER_DISTRIBUTIONS)):
        # An object of the user's own kind is left to the handlers, as in Pyro (the effect
        # handlers tutorial's lazy values); with no handler giving a value, the default effect
        # refuses it.
        return fn
    raise TypeError(
        f"sample site '{name}': expected a torch.distributions.Distribution, "
        f"got {type(fn).__name__}: {fn!r}"
    )


def sample(
    name: str,
    fn: Distribution,
    *args: Any,
    obs: torch.Tensor | None = None,
    obs_mask: torch.Tensor | None = None,
    infer: dict | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """A random variable ``name`` drawn from ``fn`` (or observed at ``obs``).

    ``sample_shape=`` (keyword) draws several values at once. ``obs_mask`` (a bool tensor
    broadcastable to the batch shape) observes ``obs`` where it is True and draws the rest: as
    in Pyro, the site splits into ``name + "_observed"`` and a latent ``name + "_unobserved"``
    (for guides), each with the other's elements masked out of its log density, and ``name``
    becomes a deterministic site holding the two interleaved.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(0.5)).item()
        0.5
    """
    if obs_mask is not None:
        return _masked_observe(name, fn, obs, obs_mask, *args, **kwargs)
    if not isinstance(fn, Distribution):
        fn = _as_distribution(name, fn)
    if obs is not None and not isinstance(obs, torch.Tensor):
        obs = as_observation(obs, name)
    if not _STACK.get():
        if obs is not None:
            if _ENABLED[0]:  # no trace will score it: checked now
                check_observed(name, fn, obs)
            return obs
        if fn.has_rsample:
            return fn.rsample(*args, **kwargs)
        return fn.sample(*args, **kwargs)
    is_observed = obs is not None
    if infer is not None:
        infer = dict(infer)
        # Pyro's override: a reparameterizer passes an initial value as obs, not observed.
        is_observed = infer.pop("is_observed", is_observed)
    msg = new_message("sample", name, fn, args, kwargs, obs, is_observed, infer)
    apply_stack(msg)
    return msg["value"]


def _masked_observe(
    name: str, fn: Distribution, obs: Any, obs_mask: torch.Tensor, *args: Any, **kwargs: Any
) -> torch.Tensor:
    with mask(mask=obs_mask):
        observed = sample(f"{name}_observed", fn, *args, obs=obs, **kwargs)
    with mask(mask=~obs_mask):
        unobserved = sample(f"{name}_unobserved", fn, *args, **kwargs)
    event_dim = len(fn.event_shape)
    batch_mask = obs_mask.reshape(obs_mask.shape + (1,) * event_dim)
    try:
        value = torch.where(batch_mask, observed, unobserved)
    except RuntimeError as e:
        if "must match the size of tensor" not in str(e):
            raise
        shape = torch.broadcast_shapes(observed.shape, unobserved.shape)
        raise ValueError(
            f"Invalid obs_mask shape {tuple(obs_mask.shape)}; should be "
            f"broadcastable to batch_shape = {tuple(shape[: len(shape) - event_dim])} "
            f"(sample site '{name}')"
        ) from e
    return deterministic(name, value, event_dim=event_dim)


def param(
    name: str,
    init_tensor: torch.Tensor | Callable[[], torch.Tensor] | None = None,
    constraint: constraints.Constraint = constraints.real,
    event_dim: int | None = None,
    *,
    init: torch.Tensor | Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A learnable parameter: created from ``init_tensor`` the first time, then read.

    The value satisfies ``constraint``; the store keeps an unconstrained leaf behind it.
    ``init=`` is another name for ``init_tensor`` (Pyro's keyword).

    Example::

        >>> import torch, miniprob as pyro
        >>> pyro.param("w", init=torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    if init is not None:
        if init_tensor is not None:
            raise TypeError(f"param '{name}': give init_tensor or init, not both")
        init_tensor = init
    store = _CURRENT.get()
    if not _STACK.get():
        return store.get_param(name, init_tensor, constraint, event_dim)
    args = (name,) if init_tensor is None else (name, init_tensor)
    kwargs = {"constraint": constraint, "event_dim": event_dim}
    msg = new_message("param", name, store.get_param, args, kwargs)
    apply_stack(msg)
    return msg["value"]


def module(
    name: str, nn_module: torch.nn.Module, update_module_params: bool = False
) -> torch.nn.Module:
    """Register ``nn_module``'s parameters in the store as ``'name$$$sub.weight'``.

    The store keeps the module's own ``nn.Parameter`` objects, so optimizer steps train the
    module in place. ``update_module_params=True`` also puts the store's tensors back into the
    module (needed after loading a saved store).

    Example::

        >>> import torch, miniprob as pyro
        >>> net = pyro.module("net", torch.nn.Linear(2, 1))
        >>> sorted(k for k in pyro.get_param_store().keys() if k.startswith("net"))
        ['net$$$bias', 'net$$$weight']
    """
    if isinstance(nn_module, type):
        raise TypeError(
            f"module '{name}': expected an nn.Module instance, got the class {nn_module}"
        )
    if not hasattr(nn_module, "named_parameters"):
        raise TypeError(f"module '{name}': expected an nn.Module, got {type(nn_module).__name__}")
    if "$$$" in name:
        raise ValueError(f"module name '{name}' must not contain '$$$'")
    registered = {}
    for param_name, value in nn_module.named_parameters():
        if value.requires_grad:
            registered[param_name] = param(module_param_name(name, param_name), value)
        elif nn_module.training:
            warnings.warn(
                f"module '{name}': {param_name} has requires_grad=False and was not registered "
                "(call .train(False) on the module to silence this)",
                stacklevel=2,
            )
    if update_module_params:
        for param_name, value in registered.items():
            owner_name, _, attr = param_name.rpartition(".")
            owner = nn_module.get_submodule(owner_name) if owner_name else nn_module
            if owner._parameters[attr] is not value:
                owner._parameters[attr] = value
    return nn_module


def deterministic(name: str, value: torch.Tensor, event_dim: int | None = None) -> torch.Tensor:
    """Record a deterministic ``value`` in traces (it adds nothing to the log density)."""
    event_dim = value.dim() if event_dim is None else event_dim
    return sample(
        name,
        Delta(value, event_dim=event_dim).mask(False),
        obs=value,
        infer={"_deterministic": True},
    )


def factor(name: str, log_factor: torch.Tensor, *, has_rsample: bool | None = None) -> None:
    """Add ``log_factor`` to the model's log density, as an observed site ``name``."""
    unit = Unit(log_factor, has_rsample=has_rsample)
    sample(name, unit, obs=unit.sample(), infer={"is_auxiliary": True})
