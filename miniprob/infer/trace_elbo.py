"""``Trace_ELBO``: the ELBO with pathwise gradients where the guide can reparameterize, and a
score-function surrogate (Rao-Blackwellized over plates) where it cannot.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import SVI, Trace_ELBO
    >>> from miniprob.optim import Adam
    >>> pyro.clear_param_store()
    >>> def model():
    ...     pyro.sample("x", dist.Normal(0.0, 1.0))
    >>> def guide():
    ...     pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(1.0)), 1.0))
    >>> svi = SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO())
    >>> losses = [svi.step() for _ in range(50)]
    >>> abs(pyro.param("m").item()) < 0.5
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..poutine.trace_struct import Trace
from ..validation import _ENABLED as _VALIDATION
from .elbo import ELBO, check_infer_options


class _PlateSums:
    """Downstream costs keyed by their vectorized plate frames, summed on demand to a target
    set of frames (the plates of one non-reparameterized site)."""

    def __init__(self) -> None:
        self.terms: dict[frozenset, torch.Tensor] = {}

    def add(self, stack: tuple, value: torch.Tensor) -> None:
        frames = frozenset(f for f in stack if f.vectorized)
        old = self.terms.get(frames)
        self.terms[frames] = value if old is None else old + value

    def sum_to(self, target_stack: tuple) -> torch.Tensor | float:
        total = None
        for frames, value in self.terms.items():
            for f in frames:
                if f not in target_stack and value.shape[f.dim] != 1:
                    value = value.sum(f.dim, True)
            while value.shape and value.shape[0] == 1:
                value = value.squeeze(0)
            total = value if total is None else total + value
        return 0.0 if total is None else total


def _downstream_costs(model_trace: Trace, guide_trace: Trace) -> _PlateSums:
    """``log p - log q`` per site, detached, grouped by plates (for the score-function term)."""
    sums = _PlateSums()
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample":
            term = site["log_prob"]
            guide_site = None if site["is_observed"] else guide_trace.nodes.get(name)
            if guide_site is not None:  # None: a latent the guide lacks, drawn from the prior
                term = term - guide_site["log_prob"]
            sums.add(site["cond_indep_stack"], term.detach())
    return sums


class Trace_ELBO(ELBO):
    """The standard ELBO estimator; gradients equal Pyro's ``Trace_ELBO`` under the same seed.

    For a guide site that cannot be reparameterized, the surrogate adds
    ``score_function * (downstream log p - log q)``, where the downstream cost is summed over the
    plates that do not contain the site (plate-aware Rao-Blackwellization, as in Pyro).
    """

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        if _VALIDATION[0]:
            check_infer_options(guide_trace, type(self).__name__)
        return model_trace, guide_trace

    def _differentiable_loss_particle(
        self, model_trace: Trace, guide_trace: Trace
    ) -> tuple[torch.Tensor, torch.Tensor]:
        surrogate = None  # not 0.0: adding to a Python zero would put one more node in the graph
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                lp = site["log_prob_sum"]
                surrogate = lp if surrogate is None else surrogate + lp
        # When every guide site is reparameterized, the ELBO and its surrogate are the same sum.
        elbo = None
        costs = None
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            _, score_function, entropy_term = site["score_parts"]
            if isinstance(entropy_term, torch.Tensor):
                lp = site["log_prob_sum"]
                surrogate = -lp if surrogate is None else surrogate - lp
                if elbo is not None:
                    elbo = elbo - site["log_prob_sum"].detach()
                continue
            if elbo is None:
                elbo = self._elbo_so_far(model_trace, guide_trace, site["name"])
            elbo = elbo - site["log_prob_sum"].detach()
            if costs is None:
                costs = _downstream_costs(model_trace, guide_trace)
            downstream = costs.sum_to(site["cond_indep_stack"])
            term = (downstream * score_function).sum()
            surrogate = term if surrogate is None else surrogate + term
        if surrogate is None:
            surrogate = 0.0
        surrogate_loss = -surrogate
        if elbo is not None:
            return -elbo, surrogate_loss
        # Every guide site reparameterized: the loss is the surrogate's value (negated once).
        if isinstance(surrogate_loss, torch.Tensor):
            return surrogate_loss.detach(), surrogate_loss
        return torch.tensor(surrogate_loss), surrogate_loss

    @staticmethod
    def _elbo_so_far(model_trace: Trace, guide_trace: Trace, stop: str) -> torch.Tensor:
        """The detached ELBO sum of the model sites and the guide sites before ``stop``."""
        elbo = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"].detach()
        for name, site in guide_trace.nodes.items():
            if name == stop:
                break
            if site["type"] == "sample":
                elbo = elbo - site["log_prob_sum"].detach()
        return elbo
