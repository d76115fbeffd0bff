"""``TraceGraph_ELBO``: score-function gradients Rao-Blackwellized along the program's
dependencies, with optional baselines.

The score function of a non-reparameterized guide site ``z`` needs to multiply only the costs
(``log p`` and ``-log q`` terms) that depend on ``z``. Which ones do is found by *provenance*,
as in Pyro 1.9: the value of every such site is wrapped in a tensor that carries the site's
name, and every torch op on it passes the names of its inputs on to its outputs, so a site's
log density knows which non-reparameterized draws it was computed from. Each ``z`` then gets
``score_function(z) * (downstream cost - baseline)``, the cost summed over the plates ``z`` is
not in. (The dense trace graph, which Pyro's docs describe, would take every later site as
downstream; Pyro 1.9.2's numbers come from provenance, and these are those numbers.)

Baselines (``infer={"baseline": {...}}`` on a guide site): ``use_decaying_avg_baseline`` with
``baseline_beta``, a ``baseline_value`` tensor or an ``nn_baseline`` module with its
``nn_baseline_input``, as in Pyro; the latter two add a squared-error loss that trains them.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import TraceGraph_ELBO
    >>> def model():
    ...     z = pyro.sample("z", dist.Bernoulli(0.5))
    ...     pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(1.0))
    >>> def guide():
    ...     pyro.sample("z", dist.Bernoulli(pyro.param("p", torch.tensor(0.5))))
    >>> isinstance(TraceGraph_ELBO().loss(model, guide), float)
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..params import get_param_store
from ..poutine.plate import _Subsample
from ..poutine.trace_struct import Trace
from ..primitives import param
from ..runtime import Message, Messenger
from .compiled import CaptureError
from .diagnostics import raise_nonfinite
from .elbo import ELBO, VALUES_READABLE
from .jit_elbo import _CapturedELBO
from .trace_elbo import _PlateSums


class _Tracked(torch.Tensor):
    """A tensor that carries the names of the non-reparameterized sites it depends on; torch
    ops on it return tensors carrying the union of their inputs' names."""

    _names: frozenset

    @staticmethod
    def wrap(data: Any, names: frozenset) -> Any:
        if not names:
            return data
        if isinstance(data, (tuple, list)):
            return type(data)(_Tracked.wrap(x, names) for x in data)
        if not isinstance(data, torch.Tensor):
            return data
        if isinstance(data, _Tracked):
            names = names | data._names
        with torch._C.DisableTorchFunctionSubclass():
            tracked = data.as_subclass(_Tracked)
        tracked._names = names
        return tracked

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        names = _names_of(args) | _names_of(tuple(kwargs.values()))
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        return _Tracked.wrap(result, names)


def _untracked(x: Any) -> Any:
    if isinstance(x, _Tracked):
        with torch._C.DisableTorchFunctionSubclass():
            return x.as_subclass(torch.Tensor)
    return x


def _names_of(values: Any) -> frozenset:
    """The union of the names carried by the tensors in ``values`` (nested tuples and lists)."""
    names = frozenset()
    for x in values:
        if isinstance(x, _Tracked):
            names = names | x._names
        elif isinstance(x, (tuple, list)):
            names = names | _names_of(x)
    return names


class _TrackNonReparam(Messenger):
    """Give the value of each sampled, non-reparameterized site its own name as provenance.

    While a step is captured (:mod:`miniprob.infer.compiled`) the values are fake tensors,
    themselves a tensor subclass that :class:`_Tracked` cannot wrap: they stay unwrapped, and
    the loss takes the provenance its last eager evaluation found (a capture follows an eager
    step of the same signature, and repeats its structure)."""

    def postprocess_message(self, msg: Message) -> None:
        if (
            VALUES_READABLE[0]
            and msg["type"] == "sample"
            and not msg["is_observed"]
            and not isinstance(msg["fn"], _Subsample)
            and not getattr(msg["fn"], "has_rsample", False)
        ):
            msg["value"] = _Tracked.wrap(msg["value"], frozenset([msg["name"]]))


_BASELINE_OPTIONS = (
    "nn_baseline",
    "nn_baseline_input",
    "use_decaying_avg_baseline",
    "baseline_beta",
    "baseline_value",
)


def _baseline(name: str, site: dict, cost: torch.Tensor) -> tuple[Any, Any]:
    """The baseline of guide site ``name`` for its downstream ``cost``, and the loss that
    trains it (0 when there is none), as in Pyro."""
    options = dict(site["infer"].get("baseline", {}))
    unknown = set(options) - set(_BASELINE_OPTIONS)
    if unknown:
        raise ValueError(
            f"site '{name}': unknown baseline options {sorted(unknown)}; expected some of "
            f"{list(_BASELINE_OPTIONS)}"
        )
    module = options.get("nn_baseline")
    value = options.get("baseline_value")
    if module is not None and value is not None:
        raise ValueError(f"site '{name}': give nn_baseline or baseline_value, not both")
    baseline, loss = 0.0, 0.0
    if options.get("use_decaying_avg_baseline", False):
        if not VALUES_READABLE[0]:
            raise CaptureError(
                f"site '{name}': the decaying-average baseline replaces a param-store entry "
                "during the step, which a program cannot do"
            )
        beta = options.get("baseline_beta", 0.90)
        param_name = "__baseline_avg_downstream_cost_" + name
        with torch.no_grad():
            old = param(param_name, torch.zeros(cost.shape, device=cost.device))
            new = (1 - beta) * cost + beta * old
        get_param_store()[param_name] = _untracked(new)
        baseline = baseline + old
    if module is not None:
        baseline = baseline + module(options["nn_baseline_input"].detach())
    elif value is not None:
        baseline = baseline + value
    if module is not None or value is not None:
        loss = torch.pow(cost.detach() - baseline, 2.0).sum()
    if isinstance(baseline, torch.Tensor) and baseline.shape != cost.shape:
        raise ValueError(
            f"site '{name}': the baseline has shape {tuple(baseline.shape)} but the downstream "
            f"cost has shape {tuple(cost.shape)}"
        )
    return baseline, loss


class TraceGraph_ELBO(ELBO):
    """The ELBO with score-function terms that multiply only the costs downstream of each
    non-reparameterized guide site (see the module docstring); Pyro's ``TraceGraph_ELBO``,
    the same numbers under the same seed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per (trace, site): the non-reparameterized guide sites its log density depends on,
        # as the last eager evaluation found them (a capture cannot follow them).
        self._provenance: dict[tuple[str, str], frozenset] = {}

    def _get_trace(self, model: Any, guide: Any, args: tuple, kwargs: dict) -> tuple[Trace, Trace]:
        with _TrackNonReparam():
            model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and site["infer"].get("enumerate"):
                raise ValueError(
                    f"site '{name}' is marked for enumeration, which TraceGraph_ELBO does not "
                    "do; use TraceEnum_ELBO"
                )
        return model_trace, guide_trace

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """The loss (negative ELBO) as a float; baselines are left as they are (as in Pyro)."""
        with torch.no_grad():
            particles = list(self._get_traces(model, guide, args, kwargs))
            elbo = sum(
                float(model_trace.log_prob_sum()) - float(guide_trace.log_prob_sum())
                for model_trace, guide_trace in particles
            )
        value = -elbo / self.num_particles
        if not math.isfinite(value):
            raise_nonfinite(value, particles=particles)
        return value

    def _differentiable_loss_particle(
        self, model_trace: Trace, guide_trace: Trace
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if VALUES_READABLE[0]:
            self._record_provenance(model_trace, guide_trace)
        elbo = 0.0
        surrogate = 0.0
        downstream: dict[str, _PlateSums] = {}
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample":
                lp_sum = site["log_prob_sum"]
                elbo = elbo + lp_sum
                surrogate = surrogate + lp_sum
                for key in self._depends_on("model", name):
                    downstream.setdefault(key, _PlateSums()).add(
                        site["cond_indep_stack"], site["log_prob"]
                    )
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample":
                lp_sum = site["log_prob_sum"]
                elbo = elbo - lp_sum
                entropy = site["score_parts"][2]
                if isinstance(entropy, torch.Tensor):
                    surrogate = surrogate - entropy.sum()
                for key in self._depends_on("guide", name):
                    downstream.setdefault(key, _PlateSums()).add(
                        site["cond_indep_stack"], -site["log_prob"]
                    )
        baseline_loss = 0.0
        for name, costs in downstream.items():
            site = guide_trace.nodes.get(name)
            if site is None:  # a model latent the guide lacks (drawn from the prior)
                continue
            cost = costs.sum_to(site["cond_indep_stack"])
            if site["infer"].get("baseline"):
                baseline, loss = _baseline(name, site, cost)
                cost = cost - baseline
                baseline_loss = baseline_loss + loss
            score = site["score_parts"][1]
            surrogate = surrogate + (score * cost.detach()).sum()
        surrogate_loss = baseline_loss - surrogate
        elbo, surrogate_loss = _untracked(elbo), _untracked(surrogate_loss)
        if not isinstance(elbo, torch.Tensor):
            elbo = torch.tensor(float(elbo))
        return -elbo.detach(), surrogate_loss

    def _record_provenance(self, model_trace: Trace, guide_trace: Trace) -> None:
        """Note, per sample site, the non-reparameterized guide sites its log density depends
        on (what a capture, which cannot follow them, takes)."""
        for trace, kind in ((model_trace, "model"), (guide_trace, "guide")):
            for name, site in trace.nodes.items():
                if site["type"] == "sample":
                    self._provenance[kind, name] = _names_of((site["log_prob_sum"],))

    def _depends_on(self, trace: str, name: str) -> list[str]:
        names = self._provenance.get((trace, name))
        if names is None:
            raise CaptureError(
                f"{trace} site '{name}': no eager evaluation of this loss found what it "
                "depends on (a capture cannot follow non-reparameterized draws)"
            )
        return sorted(names)


class JitTraceGraph_ELBO(_CapturedELBO, TraceGraph_ELBO):
    """``TraceGraph_ELBO`` captured once per input signature and replayed, as
    :class:`~miniprob.infer.JitTrace_ELBO` is (the JIT options are accepted and not used). The
    eager pass that finds the parameters also records the provenance the capture takes (see
    :class:`_TrackNonReparam`); a decaying-average baseline cannot be captured: it runs
    eagerly, with a :class:`~miniprob.infer.compiled.CompileWarning`."""

    def _traces_seen(self, model_trace: Trace, guide_trace: Trace) -> None:
        self._record_provenance(model_trace, guide_trace)
