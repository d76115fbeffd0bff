"""``TraceMeanField_ELBO``: the ELBO with analytic KL divergences where torch knows them.

For a mean-field guide (each latent's guide independent of the others given the data), the
KL term of each latent is computed in closed form when ``kl_divergence(q, p)`` is registered
for the pair, and by Monte Carlo otherwise. Guide sites must be reparameterizable.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import TraceMeanField_ELBO
    >>> pyro.clear_param_store()
    >>> def model():
    ...     pyro.sample("x", dist.Normal(0.0, 1.0))
    >>> def guide():
    ...     pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(1.0)), 1.0))
    >>> TraceMeanField_ELBO().loss(model, guide)
    0.5
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import kl_divergence

from ..poutine.trace_struct import Trace, scale_and_mask
from ..validation import _ENABLED as _VALIDATION
from .elbo import ELBO, check_infer_options


def _check_reparameterized(site: dict) -> None:
    if not site["fn"].has_rsample:
        raise NotImplementedError(
            f"TraceMeanField_ELBO needs reparameterizable guide sites; site '{site['name']}' "
            f"({type(site['fn']).__name__}) is not (use Trace_ELBO)"
        )


class TraceMeanField_ELBO(ELBO):
    """ELBO with closed-form KL terms; loss values and gradients equal Pyro's."""

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        if _VALIDATION[0]:
            check_infer_options(guide_trace, type(self).__name__)
        return model_trace, guide_trace

    def _differentiable_loss_particle(
        self, model_trace: Trace, guide_trace: Trace
    ) -> tuple[torch.Tensor, torch.Tensor]:
        elbo = 0.0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            guide_site = None if model_site["is_observed"] else guide_trace.nodes.get(name)
            if guide_site is None:  # observed, or a latent the guide lacks (drawn from the prior)
                elbo = elbo + model_site["log_prob_sum"]
                continue
            _check_reparameterized(guide_site)
            try:
                kl = kl_divergence(guide_site["fn"], model_site["fn"])
            except NotImplementedError:
                elbo = elbo + model_site["log_prob_sum"] - guide_site["score_parts"][2].sum()
                continue
            kl = scale_and_mask(kl, guide_site["scale"], guide_site["mask"])
            guide_site["kl"] = kl  # for the report of a non-finite loss
            if isinstance(kl, torch.Tensor):
                elbo = elbo - kl.sum()
            else:
                elbo = elbo - kl * guide_site["fn"].batch_shape.numel()
        for name, guide_site in guide_trace.nodes.items():
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                _check_reparameterized(guide_site)
                elbo = elbo - guide_site["score_parts"][2].sum()
        elbo = torch.as_tensor(elbo)
        return -elbo.detach(), -elbo
