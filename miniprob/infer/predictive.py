"""``Predictive``: samples from the posterior predictive (or the prior) of a model.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import Predictive
    >>> def model():
    ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
    ...     return pyro.sample("x", dist.Normal(z, 1.0))
    >>> samples = Predictive(model, num_samples=7)()
    >>> sorted(samples), samples["x"].shape
    (['x', 'z'], torch.Size([7]))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..poutine.handlers import block, condition, mask, trace
from ..poutine.plate import plate, prune_subsample_sites
from ..poutine.trace_struct import Trace
from ..validation import check_names, check_program


def _max_plate_nesting(model: Callable, args: tuple, kwargs: dict) -> int:
    with block():
        tr = trace(model).get_trace(*args, **kwargs)
    dims = [
        f.dim
        for site in tr.nodes.values()
        if site["type"] == "sample"
        for f in site["cond_indep_stack"]
        if f.vectorized
    ]
    return -min(dims) if dims else 0


def _predict(
    model: Callable,
    posterior_samples: dict[str, torch.Tensor],
    num_samples: int,
    return_sites: Sequence[str] | None,
    parallel: bool,
    args: tuple,
    kwargs: dict,
) -> dict[str, torch.Tensor]:
    """Run ``model`` ``num_samples`` times, conditioned on each posterior sample in turn.

    ``return_sites``: the sites to return; None means every sample site; ``()`` means every
    site not already in ``posterior_samples``. The order of runs (and so of random draws)
    follows Pyro's, so results match it under one seed.
    """
    model = torch.no_grad()(mask(model, mask=False))
    nesting = _max_plate_nesting(model, args, kwargs)
    model_trace = prune_subsample_sites(trace(model).get_trace(*args, **kwargs))
    shapes: dict[str, tuple | None] = {}
    for name in model_trace.stochastic_nodes + model_trace.observation_nodes:
        site = model_trace.nodes[name]
        pad = nesting - len(site["fn"].batch_shape)
        shape = (num_samples,) + (1,) * pad + tuple(site["value"].shape)
        if return_sites:
            if name in return_sites:
                shapes[name] = shape
        elif return_sites is None or name not in posterior_samples:
            shapes[name] = shape
    if return_sites is not None and "_RETURN" in return_sites:
        value = model_trace.nodes["_RETURN"]["value"]
        shapes["_RETURN"] = (
            (num_samples,) + tuple(value.shape) if isinstance(value, torch.Tensor) else None
        )

    if not parallel:
        collected = []
        for i in range(num_samples):
            data = {k: v[i] for k, v in posterior_samples.items()}
            tr = trace(condition(model, data=data)).get_trace(*args, **kwargs)
            collected.append({name: tr.nodes[name]["value"] for name in shapes})
        out = {}
        for name, shape in shapes.items():
            values = [c[name] for c in collected]
            if shape is None:
                out[name] = values
            else:
                out[name] = torch.stack([torch.as_tensor(v) for v in values]).reshape(shape)
        return out

    reshaped = {}
    for name, value in posterior_samples.items():
        event = value.shape[1:]
        reshaped[name] = value.reshape((num_samples,) + (1,) * (nesting - len(event)) + event)
    vectorized = plate("_num_predictive_samples", num_samples, dim=-nesting - 1)(model)
    tr: Trace = trace(condition(vectorized, data=reshaped)).get_trace(*args, **kwargs)
    out = {}
    for name, shape in shapes.items():
        value = tr.nodes[name]["value"]
        if shape is None:
            out[name] = value
        elif value.numel() < math.prod(shape):
            out[name] = value.expand(shape)
        else:
            out[name] = value.reshape(shape)
    return out


class Predictive:
    """Draw ``num_samples`` runs of ``model``: from the prior, conditioned on
    ``posterior_samples``, or with latents drawn from ``guide``.

    :param return_sites: sites to return (``"_RETURN"`` for the model's return value); by
        default every sample site not given in ``posterior_samples`` (every site, with a guide).
    :param parallel: vectorize the draws as an outermost plate instead of looping.
    """

    def __init__(
        self,
        model: Callable,
        posterior_samples: dict[str, torch.Tensor] | None = None,
        guide: Callable | None = None,
        num_samples: int | None = None,
        return_sites: Sequence[str] = (),
        parallel: bool = False,
    ) -> None:
        check_names(return_sites, "Predictive: return_sites")
        check_program(model, "model", "Predictive")
        if guide is not None:
            check_program(guide, "guide", "Predictive")
        if num_samples is not None and (
            isinstance(num_samples, bool)
            or not isinstance(num_samples, numbers.Integral)
            or num_samples < 1
        ):
            raise ValueError(
                f"Predictive: num_samples must be positive and an int, got {num_samples!r}"
            )
        posterior_samples = {} if posterior_samples is None else posterior_samples
        if not isinstance(posterior_samples, dict):
            raise TypeError(
                "Predictive: posterior_samples must be a dict {site name: tensor of samples}, got "
                f"{type(posterior_samples).__name__}"
            )
        for name, value in posterior_samples.items():
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                found = (
                    "a scalar tensor" if isinstance(value, torch.Tensor) else type(value).__name__
                )
                raise ValueError(
                    f"Predictive: posterior_samples['{name}'] must be a tensor with a leading "
                    f"dim of samples (shape (num_samples, *site shape)), got {found}"
                )
        batch_sizes = {name: v.shape[0] for name, v in posterior_samples.items()}
        if num_samples is None:
            if not batch_sizes:
                raise ValueError("Predictive needs num_samples= or posterior_samples=")
            num_samples = next(iter(batch_sizes.values()))
        mismatched = {k: n for k, n in batch_sizes.items() if n != num_samples}
        if mismatched:
            raise ValueError(
                f"posterior_samples {mismatched} have a leading size other than "
                f"num_samples={num_samples}"
            )
        if guide is not None and posterior_samples:
            raise ValueError("give Predictive a guide or posterior_samples, not both")
        self.model = model
        self.guide = guide
        self.posterior_samples = posterior_samples
        self.num_samples = num_samples
        self.return_sites = return_sites
        self.parallel = parallel

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Return ``{site: stacked values}`` with a leading ``num_samples`` dim."""
        samples = self.posterior_samples
        return_sites = self.return_sites
        if self.guide is not None:
            return_sites = return_sites or None
            samples = _predict(
                self.guide, samples, self.num_samples, None, self.parallel, args, kwargs
            )
        return _predict(
            self.model, samples, self.num_samples, return_sites, self.parallel, args, kwargs
        )

    forward = __call__

    def get_samples(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self(*args, **kwargs)
