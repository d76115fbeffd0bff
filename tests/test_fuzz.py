"""Fuzzing: random models and guides (plate nesting and sizes, explicit dims, subsampling,
event dims, constrained parameters, observed and latent sites of many families, scale and
mask) go through tracing, every ELBO and ``SVI.step``. Each either works or raises one of
miniprob's documented errors (``ValueError``, ``TypeError``, ``KeyError``,
``NotImplementedError`` raised by miniprob's own code), never an unexplained internal exception
such as a raw torch ``RuntimeError`` or an ``AttributeError``.

Some examples carry one deliberate mistake (a duplicate site, a guide site the model lacks,
a batch shape that does not fit its plate, an observation outside the support, ...); those
must end in a documented error or, where Pyro accepts them, work.

Run with ``-s`` to see how many examples ran and how they ended.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import warnings
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributions import constraints

import miniprob as pyro
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from miniprob.optim import Adam

MINIPROB_DIR = os.path.dirname(os.path.abspath(pyro.__file__)) + os.sep
DOCUMENTED = (ValueError, TypeError, KeyError, NotImplementedError)
OUTCOMES: collections.Counter = collections.Counter()
MESSAGES: collections.Counter = collections.Counter()

# family: (support kind, intrinsic event size or None)
FAMILIES = {
    "normal": "real",
    "lognormal": "positive",
    "gamma": "positive",
    "beta": "unit",
    "bernoulli": "boolean",
    "poisson": "count",
    "dirichlet": "simplex",
    "categorical": "category",
}
EXTRAS = [
    "none",
    "deterministic",  # a pyro.deterministic of the value
    "factor",  # a pyro.factor of the value, inside the same plates
    "number_obs",  # a scalar observation given as a Python float
    "model_param",  # the prior's loc is a model param, subsampled by plate(event_dim=...)
    "delta_guide",  # the guide is a Delta at a constrained param (MAP)
    "auxiliary",  # the guide has an extra auxiliary site
    "sequential",  # a latent in a sequential plate (for i in plate), inside the site's plates
]
K = 3  # the size of a Dirichlet's or a Categorical's intrinsic dim
MISTAKES = [
    None,
    "duplicate_site",
    "guide_extra_site",
    "guide_missing_site",
    "bad_batch_shape",
    "obs_out_of_support",
    "plate_dim_clash",
    "bad_param_init",
    "not_a_distribution",
    "obs_extra_dim",
    "subsample_out_of_range",
    "guide_param_shape",
    "bad_scale",
]


@dataclass(frozen=True)
class PlateSpec:
    name: str
    size: int
    subsample_size: int | None


@dataclass(frozen=True)
class SiteSpec:
    name: str
    family: str
    depth: int  # how many plates of the chain enclose it
    event: tuple  # extra event dims (made with .to_event)
    observed: bool
    broadcast: bool  # parameters without batch dims: the plates broadcast them
    guide_param_event_dim: bool  # guide params subsampled by plate(event_dim=...)
    scale: float | None
    mask: bool
    extra: str  # one of EXTRAS


@dataclass(frozen=True)
class ModelSpec:
    plates: tuple
    dim_gap: int | None  # None: dims allocated; else explicit dims, shifted by the gap
    sites: tuple
    mistake: str | None
    seed: int


def _plates():
    plate = st.builds(
        lambda size, sub: (size, sub if sub is not None and sub < size else None),
        st.integers(1, 4),
        st.one_of(st.none(), st.integers(1, 3)),
    )
    return st.lists(plate, max_size=3).map(
        lambda ps: tuple(PlateSpec(f"p{i}", s, sub) for i, (s, sub) in enumerate(ps))
    )


@st.composite
def model_specs(draw):
    plates = draw(_plates())
    sites = []
    for i in range(draw(st.integers(1, 4))):
        sites.append(
            SiteSpec(
                name=f"s{i}",
                family=draw(st.sampled_from(sorted(FAMILIES))),
                depth=draw(st.integers(0, len(plates))),
                event=tuple(draw(st.lists(st.integers(1, 3), max_size=2))),
                observed=draw(st.booleans()),
                broadcast=draw(st.booleans()),
                guide_param_event_dim=draw(st.booleans()),
                scale=draw(st.sampled_from([None, None, 0.5, 3.0])),
                mask=draw(st.booleans()),
                extra=draw(st.sampled_from(EXTRAS)),
            )
        )
    return ModelSpec(
        plates=plates,
        dim_gap=draw(st.sampled_from([None, None, 0, 1])),
        sites=tuple(sites),
        mistake=draw(st.one_of(st.none(), st.sampled_from(MISTAKES[1:]))),
        seed=draw(st.integers(0, 2**16)),
    )


# ---- turning a spec into a model and a guide ----------------------------------------------------


DELTA_SUPPORT = {
    "normal": constraints.real,
    "lognormal": constraints.positive,
    "gamma": constraints.positive,
    "beta": constraints.unit_interval,
}


def _intrinsic(family):
    return (K,) if family in ("dirichlet", "categorical") else ()


def _event_ndims(site):
    """Event dims of the value: the extra ones plus a Dirichlet's simplex dim."""
    return len(site.event) + (1 if site.family == "dirichlet" else 0)


def _prior(family, shape):
    """The model's distribution, its parameters of ``shape`` (batch + extra event dims)."""
    ones = torch.ones(shape)
    if family == "normal":
        return dist.Normal(torch.zeros(shape), ones)
    if family == "lognormal":
        return dist.LogNormal(torch.zeros(shape), ones)
    if family == "gamma":
        return dist.Gamma(2.0 * ones, ones)
    if family == "beta":
        return dist.Beta(2.0 * ones, 2.0 * ones)
    if family == "bernoulli":
        return dist.Bernoulli(0.3 * ones)
    if family == "poisson":
        return dist.Poisson(3.0 * ones)
    if family == "dirichlet":
        return dist.Dirichlet(torch.ones(shape + (K,)))
    return dist.Categorical(probs=torch.ones(shape + (K,)) / K)


def _guide_dist(family, name, shape, plate_args):
    """The guide's distribution for a latent: constrained parameters of ``shape`` (+ K)."""

    def param(suffix, init, constraint):
        return pyro.param(f"{name}_{suffix}", init, constraint=constraint, **plate_args)

    full = shape + _intrinsic(family)
    if family in ("normal", "lognormal"):
        loc = param("loc", lambda: torch.zeros(full), constraints.real)
        return getattr(dist, "Normal" if family == "normal" else "LogNormal")(
            loc, param("scale", lambda: 0.5 * torch.ones(full), constraints.positive)
        )
    if family == "gamma":
        conc = param("conc", lambda: 2.0 * torch.ones(full), constraints.positive)
        return dist.Gamma(conc, param("rate", lambda: torch.ones(full), constraints.positive))
    if family == "beta":
        a = param("a", lambda: 2.0 * torch.ones(full), constraints.positive)
        return dist.Beta(a, param("b", lambda: 2.0 * torch.ones(full), constraints.positive))
    if family == "bernoulli":
        return dist.Bernoulli(param("p", lambda: 0.4 * torch.ones(full), constraints.unit_interval))
    if family == "poisson":
        return dist.Poisson(param("rate", lambda: 2.0 * torch.ones(full), constraints.positive))
    if family == "dirichlet":
        return dist.Dirichlet(param("conc", lambda: torch.ones(full), constraints.positive))
    return dist.Categorical(probs=param("probs", lambda: torch.ones(full) / K, constraints.simplex))


class Program:
    """A model and a guide built from a :class:`ModelSpec`."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        torch.manual_seed(spec.seed)
        chain = spec.plates
        if spec.dim_gap is None:
            self.dims = [-(i + 1) for i in range(len(chain))]  # what allocation gives
            self.explicit = [None] * len(chain)
        else:
            self.dims = [-(i + 1) - spec.dim_gap for i in range(len(chain))]
            self.explicit = list(self.dims)
        if spec.mistake == "plate_dim_clash" and len(chain) >= 2:
            self.explicit[1] = self.explicit[0] = self.dims[0]
        self.data = {s.name: self._observation(s) for s in spec.sites if s.observed}

    def _batch_shape(self, site, sizes):
        """The batch shape of ``site`` given each enclosing plate's (sub)size."""
        enclosing = list(zip(self.dims[: site.depth], sizes[: site.depth], strict=True))
        n = max((-d for d, _ in enclosing), default=0)
        shape = [1] * n
        for d, size in enclosing:
            shape[d] = size
        return tuple(shape)

    def _observation(self, site):
        full = self._batch_shape(site, [p.size for p in self.spec.plates])
        d = _prior(site.family, full + site.event)
        if site.event:
            d = d.to_event(len(site.event))
        value = d.sample()
        if self.spec.mistake == "obs_out_of_support" and site.family not in ("normal",):
            value = value - 10.0
        if self.spec.mistake == "obs_extra_dim":
            value = value.expand((2,) + value.shape)
        return value

    def _subsample(self, site, value, indices):
        """Select the subsampled plates' indices of a full-size value (data or guide param)."""
        for d, idx in zip(self.dims[: site.depth], indices[: site.depth], strict=True):
            if idx is not None:
                position = d - _event_ndims(site)
                if value.dim() >= -position and value.shape[position] != 1:
                    value = value.index_select(position, idx)
        return value

    def _make_plates(self):
        """The plates, made once per run (a subsampled plate draws its indices when made) and
        entered by every site inside them, as a model reuses ``data_plate = pyro.plate(...)``."""
        plates = []
        for i, p in enumerate(self.spec.plates):
            kwargs = {"subsample_size": p.subsample_size}
            if self.spec.mistake == "subsample_out_of_range" and i == 0:
                kwargs = {"subsample": torch.tensor([0, p.size])}
            plates.append(pyro.plate(p.name, p.size, dim=self.explicit[i], **kwargs))
        return plates

    def _enter_plates(self, stack, plates, upto):
        indices, sizes = [], []
        for p, plate in zip(self.spec.plates[:upto], plates[:upto], strict=True):
            idx = stack.enter_context(plate)
            indices.append(None if plate.subsample_size == p.size else idx)
            sizes.append(plate.subsample_size)
        return indices, sizes

    def model(self):
        spec = self.spec
        plates = self._make_plates()
        for n, site in enumerate(spec.sites):
            with contextlib.ExitStack() as stack:
                indices, sizes = self._enter_plates(stack, plates, site.depth)
                if site.scale is not None:
                    scale = -site.scale if spec.mistake == "bad_scale" else site.scale
                    stack.enter_context(poutine.scale(scale=scale))
                batch = self._batch_shape(site, sizes)
                if site.mask:
                    stack.enter_context(poutine.mask(mask=torch.rand(batch) > 0.3))
                shape = site.event if site.broadcast else batch + site.event
                if spec.mistake == "bad_batch_shape" and site.depth and n == 0:
                    shape = (sizes[0] + 1,) + (1,) * (-self.dims[0] - 1) + site.event
                d = _prior(site.family, shape)
                if site.extra == "model_param" and site.family == "normal":
                    full = self._batch_shape(site, [p.size for p in spec.plates]) + site.event
                    loc = pyro.param(
                        f"{site.name}_prior_loc", torch.zeros(full), event_dim=len(site.event)
                    )
                    d = dist.Normal(loc, 1.0)
                if site.event:
                    d = d.to_event(len(site.event))
                if spec.mistake == "not_a_distribution" and n == 0:
                    d = torch.zeros(shape)
                obs = None
                if site.observed:
                    obs = self._subsample(site, self.data[site.name], indices)
                    if site.extra == "number_obs" and obs.numel() == 1 and not site.event:
                        obs = float(obs.reshape(()))
                value = pyro.sample(site.name, d, obs=obs)
                if spec.mistake == "duplicate_site" and n == 0:
                    pyro.sample(site.name, d, obs=obs)
                value = torch.as_tensor(value).float()
                event_ndims = _event_ndims(site)
                if event_ndims:
                    value = value.sum(tuple(range(-event_ndims, 0)))
                if site.extra == "deterministic":
                    pyro.deterministic(f"{site.name}_det", 2.0 * value)
                if site.extra == "factor":
                    pyro.factor(f"{site.name}_factor", -0.01 * value**2)
                if site.extra == "sequential":
                    for i in pyro.plate(f"{site.name}_seq", 2):
                        pyro.sample(f"{site.name}_seq_{i}", dist.Normal(0.0, 1.0))

    def guide(self):
        spec = self.spec
        latents = [s for s in spec.sites if not s.observed]
        if spec.mistake == "guide_missing_site" and latents:
            latents = latents[1:]
        plates = self._make_plates()
        for n, site in enumerate(latents):
            with contextlib.ExitStack() as stack:
                indices, _ = self._enter_plates(stack, plates, site.depth)
                full = self._batch_shape(site, [p.size for p in spec.plates]) + site.event
                if spec.mistake == "guide_param_shape" and site.depth and n == 0:
                    full = (full[0] + 1,) + full[1:] if full else full
                if site.extra == "delta_guide" and site.family in DELTA_SUPPORT:
                    event_dim = _event_ndims(site)
                    init = _prior(site.family, full).mean
                    v = pyro.param(f"{site.name}_map", init, DELTA_SUPPORT[site.family])
                    d = dist.Delta(self._subsample(site, v, indices), event_dim=event_dim)
                elif site.guide_param_event_dim:
                    event_dim = _event_ndims(site) + (1 if site.family == "categorical" else 0)
                    d = _guide_dist(site.family, site.name, full, {"event_dim": event_dim})
                else:
                    d = _guide_dist(site.family, site.name, full, {})
                    d = type(d)(**{k: self._subsample_param(site, v, indices) for k, v in _args(d)})
                if site.event and not isinstance(d, dist.Delta):
                    d = d.to_event(len(site.event))
                if spec.mistake == "bad_param_init" and n == 0:
                    pyro.param(
                        f"{site.name}_bad", torch.tensor(-1.0), constraint=constraints.positive
                    )
                pyro.sample(site.name, d)
                if site.extra == "sequential":
                    loc = pyro.param(f"{site.name}_seq_loc", torch.tensor(0.0))
                    for i in pyro.plate(f"{site.name}_seq", 2):
                        pyro.sample(f"{site.name}_seq_{i}", dist.Normal(loc, 1.0))
                if site.extra == "auxiliary":
                    aux = dist.Normal(torch.zeros(full), 1.0).to_event(len(full))
                    pyro.sample(f"{site.name}_aux", aux, infer={"is_auxiliary": True})
        if spec.mistake == "guide_extra_site":
            pyro.sample("not_in_model", dist.Normal(0.0, 1.0))

    def _subsample_param(self, site, value, indices):
        if site.family == "categorical":  # probs have a last dim of size K beyond the value's
            site = SiteSpec(**{**site.__dict__, "event": site.event + (K,)})
        return self._subsample(site, value, indices)


def _args(d):
    names = {
        "Normal": ("loc", "scale"),
        "LogNormal": ("loc", "scale"),
        "Gamma": ("concentration", "rate"),
        "Beta": ("concentration1", "concentration0"),
        "Bernoulli": ("probs",),
        "Poisson": ("rate",),
        "Dirichlet": ("concentration",),
        "Categorical": ("probs",),
    }[type(d).__name__]
    return [(k, getattr(d, k)) for k in names]


# ---- running ------------------------------------------------------------------------------------


def _raised_by_miniprob(e: BaseException) -> bool:
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and last.tb_frame.f_code.co_filename.startswith(MINIPROB_DIR)


def _attempt(label, fn, outcomes, errors=None):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn()
    except DOCUMENTED as e:
        if not _raised_by_miniprob(e) or " " not in str(e):
            raise AssertionError(f"{label}: {type(e).__name__} not raised by miniprob: {e}") from e
        outcomes[f"{label}: {type(e).__name__}"] += 1
        MESSAGES[(label, type(e).__name__, str(e).splitlines()[0][:90])] += 1
        if errors is not None:
            errors[label] = e
        return None
    except Exception as e:
        raise AssertionError(f"{label}: unexplained {type(e).__name__}: {e}") from e
    outcomes[f"{label}: ok"] += 1
    return result


ELBOS = {
    "Trace_ELBO": lambda: Trace_ELBO(),
    "TraceMeanField_ELBO": lambda: TraceMeanField_ELBO(),
    "Trace_ELBO(particles=3)": lambda: Trace_ELBO(num_particles=3),
    "Trace_ELBO(vectorized)": lambda: Trace_ELBO(num_particles=3, vectorize_particles=True),
    "TraceMeanField_ELBO(vectorized)": lambda: TraceMeanField_ELBO(
        num_particles=2, vectorize_particles=True
    ),
}


def _expected_to_fail(label, e):
    """For a model without a deliberate mistake, the errors that may still happen."""
    if str(e).startswith("loss is"):  # random parameters can make a density non-finite
        return True
    return "TraceMeanField" in label and isinstance(e, NotImplementedError)  # not reparam.


def _run(spec: ModelSpec):
    pyro.clear_param_store()
    errors = {}
    program = _attempt("build", lambda: Program(spec), OUTCOMES, errors)
    if program is None:
        return
    _attempt("trace model", lambda: poutine.trace(program.model).get_trace(), OUTCOMES, errors)
    _attempt("trace guide", lambda: poutine.trace(program.guide).get_trace(), OUTCOMES, errors)
    for name, make in ELBOS.items():
        pyro.clear_param_store()
        elbo = make()
        loss = _attempt(name, lambda e=elbo: e.loss(program.model, program.guide), OUTCOMES, errors)
        assert loss is None or isinstance(loss, float)
        if loss is not None and math.isfinite(loss):

            def grads(elbo=elbo):
                surrogate = elbo.differentiable_loss(program.model, program.guide)
                if isinstance(surrogate, torch.Tensor) and surrogate.requires_grad:
                    surrogate.backward()

            _attempt(f"{name} grads", grads, OUTCOMES, errors)
    pyro.clear_param_store()
    svi = SVI(program.model, program.guide, Adam({"lr": 0.01}), Trace_ELBO())
    keys_before = []
    for _ in range(2):
        loss = _attempt("SVI.step", svi.step, OUTCOMES, errors)
        keys_after = sorted(pyro.get_param_store().keys())
        if loss is None:  # a failed step leaves the store as it was before it
            assert keys_after == keys_before
            break
        keys_before = keys_after
    assert poutine.get_stack() == ()
    if spec.mistake is None:  # a valid model works everywhere
        unexpected = {k: e for k, e in errors.items() if not _expected_to_fail(k, e)}
        assert not unexpected, f"a valid model failed: {unexpected}"


@settings(
    max_examples=int(os.environ.get("MINIPROB_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(model_specs())
def _fuzz(spec):
    OUTCOMES["examples"] += 1
    _run(spec)


def test_random_models_work_or_raise_documented_errors():
    OUTCOMES.clear()
    try:
        _fuzz()
    finally:
        print(f"\nfuzz: {OUTCOMES['examples']} examples")
        for key, count in sorted(OUTCOMES.items()):
            if key != "examples":
                print(f"  {key}: {count}")
    assert OUTCOMES["examples"] >= 100
