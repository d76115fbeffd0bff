"""``infer_discrete``: draw (or maximize) the enumerated sites of a model from their posterior.

The model runs once under :class:`~miniprob.poutine.enum`; its log densities are contracted as
in ``TraceEnum_ELBO`` while a :class:`~.contract.Tape` records each elimination; walking the
tape backwards draws each variable given those eliminated after it (forward filtering, backward
sampling), or takes the argmax with max-product elimination (``temperature=0``: Viterbi, the
joint MAP). The model then runs again with those values (and the other latents of the first
run, indexed at them), under the caller's handlers.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import config_enumerate, infer_discrete
    >>> @config_enumerate
    ... def model(data):
    ...     with pyro.plate("data", len(data)):
    ...         z = pyro.sample("z", dist.Categorical(torch.ones(2) / 2))
    ...         pyro.sample("x", dist.Normal(torch.tensor([-3.0, 3.0])[z], 1.0), obs=data)
    ...     return z
    >>> infer_discrete(model, first_available_dim=-2, temperature=0)(
    ...     torch.tensor([-2.5, 3.1, 0.4])).tolist()
    [0, 1, 1]
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ...poutine.enum_messenger import enum
from ...poutine.handlers import block, trace
from ...poutine.plate import prune_subsample_sites
from ...poutine.trace_struct import scale_and_mask
from ...runtime import Message, Messenger
from .contract import Factor, Tape, contract_tree, sample_tape
from .traceenum_elbo import _ordinal, site_factor


class _Values(Messenger):
    """Give the named sample sites the given values."""

    def __init__(self, values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.values = values

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]
            msg["done"] = True


def infer_discrete(
    fn: Callable | None = None,
    first_available_dim: int | None = None,
    temperature: int = 1,
    *,
    strict_enumeration_warning: bool = True,
) -> Any:
    """``fn`` with its enumerated sites drawn from their posterior given the observations
    (``temperature=1``) or set to the joint MAP (``temperature=0``), as Pyro's ``infer_discrete``.

    :param fn: a model whose discrete sites are marked for enumeration.
    :param first_available_dim: the first dim left of the model's plates
        (``-1 - max_plate_nesting``).
    :param temperature: 1 to sample, 0 for the MAP.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     z = pyro.sample("z", dist.Categorical(torch.tensor([0.3, 0.7])),
        ...                     infer={"enumerate": "parallel"})
        ...     pyro.sample("x", dist.Normal(z.float(), 0.1), obs=torch.tensor(0.0))
        ...     return z
        >>> infer_discrete(model, first_available_dim=-1, temperature=0)().item()
        0
    """
    if fn is None:
        return functools.partial(
            infer_discrete,
            first_available_dim=first_available_dim,
            temperature=temperature,
            strict_enumeration_warning=strict_enumeration_warning,
        )
    if temperature not in (0, 1):
        raise ValueError(f"infer_discrete: temperature must be 0 or 1, got {temperature!r}")
    if not (isinstance(first_available_dim, int) and first_available_dim < 0):
        raise ValueError(
            "infer_discrete: first_available_dim must be a negative int (-1 - max_plate_nesting), "
            f"got {first_available_dim!r}"
        )

    @functools.wraps(fn)
    def posterior(*args: Any, **kwargs: Any) -> Any:
        values = _posterior_values(
            fn, first_available_dim, temperature, strict_enumeration_warning, args, kwargs
        )
        with _Values(values):
            return fn(*args, **kwargs)

    return posterior


def _posterior_values(
    fn: Callable,
    first_available_dim: int,
    temperature: int,
    strict: bool,
    args: tuple,
    kwargs: dict,
) -> dict[str, torch.Tensor]:
    mpn = -1 - first_available_dim
    with block(), enum(first_available_dim=first_available_dim) as e:
        tr = trace(fn).get_trace(*args, **kwargs)
    tr = prune_subsample_sites(tr)
    tr.compute_log_prob()
    plate_dims: dict[str, int] = {}
    factors: dict[frozenset, list[Factor]] = {}
    sum_dims: set = set()
    enumerated = False
    for name, site in tr.nodes.items():
        if site["type"] != "sample":
            continue
        enumerated = enumerated or site["infer"].get("_enumerate_dim") is not None
        for f in site["cond_indep_stack"]:
            if f.vectorized:
                plate_dims[f.name] = f.dim
        ordinal = _ordinal(site)
        masked = scale_and_mask(site["unscaled_log_prob"], mask=site["mask"])
        factor = site_factor(name, site, masked, e.site_dims[name], mpn)
        local = set(factor.dims) - ordinal
        if not local:
            continue
        sum_dims |= local
        factors.setdefault(ordinal, []).append(factor)
    if strict and not enumerated:
        warnings.warn(
            "infer_discrete found no sample sites configured for enumeration", stacklevel=3
        )
    ring = "max" if temperature == 0 else "log"
    tape = Tape()
    with torch.no_grad():  # the draws are integers: no gradient flows through them
        contract_tree(factors, sum_dims, ring, tape)
        chosen = sample_tape(tape, ring)
    values = {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        value = site["value"]
        event_dim = len(site["fn"].event_shape)
        batch = value.dim() - event_dim
        taken = False
        for pos in range(-batch, -mpn):
            if value.shape[batch + pos] > 1:
                index = chosen[e.site_dims[name][pos]]
                value = _take(value, pos, event_dim, index, plate_dims)
                taken = True
        # A value picked from an enumeration keeps only the dims it varies along, from the
        # first (as Pyro's); the others are as the first run drew them.
        while taken and value.dim() > event_dim and value.shape[0] == 1:
            value = value.squeeze(0)
        values[name] = value
    return values


def _take(
    value: torch.Tensor, pos: int, event_dim: int, index: Factor, plate_dims: dict[str, int]
) -> torch.Tensor:
    """``value`` at ``index`` along its batch dim ``pos`` (which keeps size 1); the index's
    plate dims are laid out at those plates' batch dims."""
    ndim = max([value.dim(), -pos + event_dim] + [-plate_dims[p] + event_dim for p in index.dims])
    value = value.reshape((1,) * (ndim - value.dim()) + value.shape)
    order = sorted(range(len(index.dims)), key=lambda i: plate_dims[index.dims[i]])
    shape = [1] * ndim
    for i in order:
        shape[ndim + plate_dims[index.dims[i]] - event_dim] = index.tensor.shape[i]
    idx = index.tensor.permute(order).reshape(shape)
    axis = ndim + pos - event_dim
    full = list(torch.broadcast_shapes(value.shape, idx.shape))
    value = value.expand(full)
    full[axis] = 1
    return value.gather(axis, idx.expand(full))
