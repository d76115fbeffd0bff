"""The five benchmark models in NumPyro, as a peer: its ``jax.jit``-compiled ``svi.update``.

Each model takes its data (and the ``vae``'s initial network weights) from the builders of
``models.py``, so NumPyro sees the same inputs, priors, guides and initial values as miniprob
and Pyro; draws differ (JAX's generator). One step is one call of the jitted update plus
``float(loss)`` (what ``svi.step`` returns), with one XLA thread: ``XLA_FLAGS`` is set before
JAX is imported (see :data:`XLA_FLAGS`), unless the caller set it.

Optional: ``numpyro`` and ``jax`` come with the ``bench`` extra; :func:`available` says whether
they import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import models

XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
NAMES = ("tiny", "linreg", "hier", "vae", "discrete")


def available() -> bool:
    os.environ.setdefault("XLA_FLAGS", XLA_FLAGS)
    try:
        import jax  # noqa: F401
        import numpyro  # noqa: F401
    except ImportError:
        return False
    return True


def _array(t: Any) -> Any:
    import jax.numpy as jnp

    return jnp.asarray(t.detach().numpy())


def tiny(args: tuple) -> tuple[Callable, Callable, tuple]:
    import numpyro
    import numpyro.distributions as dist

    def model(data):
        loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    def guide(data):
        m = numpyro.param("m", 0.0)
        s = numpyro.param("s", 1.0, constraint=dist.constraints.positive)
        numpyro.sample("loc", dist.Normal(m, s))

    return model, guide, tuple(_array(a) for a in args)


def linreg(args: tuple) -> tuple[Callable, Callable, tuple]:
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model(x, y):
        w = numpyro.sample("w", dist.Normal(jnp.zeros(10), 1.0).to_event(1))
        b = numpyro.sample("b", dist.Normal(0.0, 10.0))
        sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("obs", dist.Normal((x * w).sum(-1) + b, sigma), obs=y)

    def guide(x, y):
        positive = dist.constraints.positive
        w_loc = numpyro.param("w_loc", jnp.zeros(10))
        w_scale = numpyro.param("w_scale", jnp.ones(10), constraint=positive)
        b_loc = numpyro.param("b_loc", 0.0)
        b_scale = numpyro.param("b_scale", 1.0, constraint=positive)
        s_loc = numpyro.param("s_loc", 0.0)
        s_scale = numpyro.param("s_scale", 0.5, constraint=positive)
        numpyro.sample("w", dist.Normal(w_loc, w_scale).to_event(1))
        numpyro.sample("b", dist.Normal(b_loc, b_scale))
        numpyro.sample("sigma", dist.LogNormal(s_loc, s_scale))

    return model, guide, tuple(_array(a) for a in args)


def hier(args: tuple) -> tuple[Callable, Callable, tuple]:
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    groups, per_group = models.G, models.M

    def model(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        tau = numpyro.sample("tau", dist.LogNormal(0.0, 1.0))
        with numpyro.plate("groups", groups, dim=-1):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
            sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 1.0))
            with numpyro.plate("obs", per_group, dim=-2):
                numpyro.sample("y", dist.Normal(theta, sigma), obs=data)

    def guide(data):
        positive = dist.constraints.positive
        mu_loc = numpyro.param("mu_loc", 0.0)
        mu_scale = numpyro.param("mu_scale", 1.0, constraint=positive)
        tau_loc = numpyro.param("tau_loc", 0.0)
        tau_scale = numpyro.param("tau_scale", 0.5, constraint=positive)
        theta_loc = numpyro.param("theta_loc", jnp.zeros(groups))
        theta_scale = numpyro.param("theta_scale", jnp.ones(groups), constraint=positive)
        sigma_loc = numpyro.param("sigma_loc", jnp.zeros(groups))
        sigma_scale = numpyro.param("sigma_scale", 0.5 * jnp.ones(groups), constraint=positive)
        numpyro.sample("mu", dist.Normal(mu_loc, mu_scale))
        numpyro.sample("tau", dist.LogNormal(tau_loc, tau_scale))
        with numpyro.plate("groups", groups, dim=-1):
            numpyro.sample("theta", dist.Normal(theta_loc, theta_scale))
            numpyro.sample("sigma", dist.LogNormal(sigma_loc, sigma_scale))

    return model, guide, tuple(_array(a) for a in args)


def vae(args: tuple) -> tuple[Callable, Callable, tuple]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    encoder, decoder = models.vae_networks()
    init = {f"encoder.{k}": _array(v) for k, v in encoder.named_parameters()}
    init.update({f"decoder.{k}": _array(v) for k, v in decoder.named_parameters()})

    def linear(prefix: str, x: Any) -> Any:
        weight = numpyro.param(f"{prefix}.weight", init[f"{prefix}.weight"])
        return x @ weight.T + numpyro.param(f"{prefix}.bias", init[f"{prefix}.bias"])

    def model(data):
        with numpyro.plate("data", data.shape[0], subsample_size=models.BATCH) as idx:
            z = numpyro.sample("z", dist.Normal(jnp.zeros(models.Z_DIM), 1.0).to_event(1))
            h = jax.nn.softplus(linear("decoder.fc", z))
            logits = linear("decoder.out", h)
            numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=data[idx])

    def guide(data):
        with numpyro.plate("data", data.shape[0], subsample_size=models.BATCH) as idx:
            h = jax.nn.softplus(linear("encoder.fc", data[idx]))
            loc = linear("encoder.loc", h)
            scale = jax.nn.softplus(linear("encoder.scale", h)) + 1e-3
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide, tuple(_array(a) for a in args)


def discrete(args: tuple) -> tuple[Callable, Callable, tuple]:
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model(data):
        locs = numpyro.sample("locs", dist.Normal(jnp.zeros(2), 10.0).to_event(1))
        with numpyro.plate("data", data.shape[0]):
            z = numpyro.sample("z", dist.Bernoulli(0.5))
            numpyro.sample("x", dist.Normal(locs[z.astype(jnp.int32)], 1.0), obs=data)

    def guide(data):
        positive, unit = dist.constraints.positive, dist.constraints.unit_interval
        locs_loc = numpyro.param("locs_loc", jnp.array([-1.0, 1.0]))
        locs_scale = numpyro.param("locs_scale", jnp.ones(2), constraint=positive)
        probs = numpyro.param("probs", 0.5 * jnp.ones(data.shape[0]), constraint=unit)
        numpyro.sample("locs", dist.Normal(locs_loc, locs_scale).to_event(1))
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("z", dist.Bernoulli(probs))

    return model, guide, tuple(_array(a) for a in args)


BUILDERS = {"tiny": tiny, "linreg": linreg, "hier": hier, "vae": vae, "discrete": discrete}


def numpyro_step(name: str) -> Callable[[], float]:
    """One jitted ``svi.update`` of ``name`` per call (Adam, lr 0.01, as the others); the
    step's ``compile_s`` is the time of the first call (tracing and XLA compilation)."""
    import time

    import jax
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO

    import miniprob

    build, kwargs, _ = models.BENCHMARKS[name]
    model, guide, args = BUILDERS[name](build(miniprob, **kwargs).args)
    # NumPyro's Trace_ELBO gives no score-function term for a discrete guide site (it warns
    # so); its TraceGraph_ELBO gives the Rao-Blackwellized one that miniprob's Trace_ELBO does.
    elbo = TraceGraph_ELBO() if name == "discrete" else Trace_ELBO()
    svi = SVI(model, guide, numpyro.optim.Adam(models.LR), elbo)
    state = svi.init(jax.random.PRNGKey(0), *args)
    update = jax.jit(svi.update)

    def step() -> float:
        nonlocal state
        state, loss = update(state, *args)
        return float(loss)

    start = time.perf_counter()
    step()
    step.compile_s = time.perf_counter() - start
    return step
