"""``JitTrace_ELBO``: ``Trace_ELBO`` compiled with ``torch.jit.trace``, once per input signature.

One step of ``Trace_ELBO`` is a pure function of the parameters' unconstrained leaves and the
tensor arguments: run the guide, replay the model, add up log densities. Tracing that function
once records every tensor op into a graph; later steps run the graph, with no Python in
between, so the cost of handlers, messages, traces and ``torch.distributions`` objects
disappears. Random ops stay random in the graph and draw from torch's global generator, so a
step draws exactly what ``Trace_ELBO`` would (the first step included: the RNG state is rewound
after discovering the parameters and after tracing). The graph runs without the JIT's own
optimizations, which means every op and every gradient is computed by the same kernels as in
eager mode: values and gradients are bitwise those of ``Trace_ELBO``.

What a trace cannot see, it bakes in. The model and guide must have a static structure (no
Python branching on random values, no parameter that first appears at a later step: the
graph repeats the first step's statements), and their tensor inputs must be passed as arguments
(a tensor read from a global is a constant of the graph). A new signature - another shape,
dtype or device of a tensor argument, or another value of a non-tensor argument, as with a
smaller last minibatch - is compiled afresh (the last ``MAX_GRAPHS`` are kept). Validation runs
while compiling, on the example inputs; a non-finite loss is still caught at every step.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import SVI, JitTrace_ELBO
    >>> from miniprob.optim import Adam
    >>> pyro.clear_param_store()
    >>> def model(data):
    ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(data)):
    ...         pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)
    >>> def guide(data):
    ...     pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))
    >>> svi = SVI(model, guide, Adam({"lr": 0.1}), JitTrace_ELBO(ignore_jit_warnings=True))
    >>> data = 3.0 + torch.randn(100)
    >>> losses = [svi.step(data) for _ in range(200)]
    >>> abs(pyro.param("m").item() - data.mean().item()) < 0.3
    True
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..params import _transform_for, get_param_store
from ..poutine.handlers import block
from ..runtime import Message, Messenger, am_i_wrapped, apply_stack, new_message
from .diagnostics import raise_nonfinite
from .elbo import _particle_mean
from .trace_elbo import Trace_ELBO


class _ReadParams(Messenger):
    """Record the names of the store parameters read inside (those with an unconstrained leaf)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, None] = {}

    def postprocess_message(self, msg: Message) -> None:
        if msg["type"] == "param" and hasattr(msg["value"], "unconstrained"):
            self.names[msg["name"]] = None


class _FromLeaves(Messenger):
    """Give each named param site ``transform(leaf)``, computed at every read as the store does.

    While tracing, the leaves are the graph's inputs: the param sites then depend on the inputs,
    not on the store's tensors of the moment.
    """

    def __init__(self, leaves: dict[str, torch.Tensor], transforms: dict[str, Any]) -> None:
        super().__init__()
        self.leaves = leaves
        self.transforms = transforms
        self.first_values: dict[str, torch.Tensor] = {}

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "param" and not msg["done"] and msg["name"] in self.leaves:
            name = msg["name"]
            msg["value"] = self.transforms[name](self.leaves[name])
            msg["done"] = True
            self.first_values.setdefault(name, msg["value"])


class _KeepDraws(TorchFunctionMode):
    """Collects the results of random ops while tracing, to be returned by the graph: the
    tracer drops ops whose results go unused, and a draw nobody uses (``param("m",
    torch.randn(3))`` once "m" exists) still moves the random number generator eagerly."""

    RANDOM = frozenset(
        {
            "randn", "rand", "randint", "randperm", "normal", "bernoulli", "multinomial",
            "poisson", "rand_like", "randn_like", "randint_like", "normal_", "uniform_",
            "exponential_", "geometric_", "cauchy_", "log_normal_", "random_", "bernoulli_",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", None) in self.RANDOM and isinstance(out, torch.Tensor):
            self.draws.append(out)
        return out


def _signature(value: Any, nested: bool = False) -> Hashable:
    """What the graph of a call depends on in ``value``. A top-level tensor is an input of the
    graph (its shape counts); anything else is baked into it: a tensor inside a list by its
    identity and version, a list, tuple or dict by its contents (so an edited list is seen)."""
    if isinstance(value, torch.Tensor):
        if nested:
            try:
                version = value._version
            except RuntimeError:  # an inference tensor: it cannot change
                version = None
            return ("nested tensor", id(value), version)
        return ("tensor", value.shape, value.dtype, value.device, value.requires_grad)
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_signature(v, True) for v in value))
    if isinstance(value, dict):
        return (type(value), tuple((k, _signature(v, True)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return ("value", type(value), value)


class _Compiled:
    """One traced graph, its parameters (names, leaf shapes) and where its tensor inputs are."""

    def __init__(
        self,
        graph: Any,
        names: list[str],
        shapes: list[torch.Size],
        tensor_args: list[int],
        tensor_kwargs: list[str],
    ) -> None:
        self.graph = graph
        self.names = names
        self.shapes = shapes
        self.tensor_args = tensor_args
        self.tensor_kwargs = tensor_kwargs

    def inputs(self, leaves: tuple, args: tuple, kwargs: dict) -> tuple:
        return (
            leaves
            + tuple(args[i] for i in self.tensor_args)
            + tuple(kwargs[k] for k in self.tensor_kwargs)
        )


class JitTrace_ELBO(Trace_ELBO):
    """``Trace_ELBO`` run as a ``torch.jit.trace`` graph, compiled once per input signature.

    Same arguments as :class:`~miniprob.infer.ELBO`; ``ignore_jit_warnings=True`` silences the
    tracer's warnings (about Python values baked into the graph). ``compile_seconds`` holds the
    time each compilation took.
    """

    MAX_GRAPHS = 32
    """Graphs kept (one per input signature), the least recently used dropped first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._graphs: dict[Hashable, _Compiled] = {}
        self.compile_seconds: list[float] = []

    # ---- compiling -----------------------------------------------------------------------
    def _key(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Hashable:
        return (
            model,
            guide,
            tuple(_signature(a) for a in args),
            tuple((k, _signature(v)) for k, v in sorted(kwargs.items())),
        )

    def _compile(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> _Compiled:
        start = time.perf_counter()
        if self.vectorize_particles and self.max_plate_nesting == float("inf"):
            # Eager mode guesses at its first step, drawing as it goes: so does this.
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        rng = torch.get_rng_state()
        # 1. Find the parameters (creating them on a first step) by running the ELBO once.
        reads = _ReadParams()
        with block(), reads, torch.no_grad():
            for _ in self._get_traces(model, guide, args, kwargs):
                pass
        store = get_param_store()
        names = [n for n in reads.names if n in store]
        leaves = [store.unconstrained(n) for n in names]
        transforms = {n: _transform_for(n, store.get_constraint(n)) for n in names}

        # 2. Trace the ELBO as a function of (leaves, tensor arguments), from the same RNG state.
        tensor_args = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        tensor_kwargs = sorted(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))

        keep_draws = _KeepDraws()

        def loss_and_surrogate(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            leaf_inputs = dict(zip(names, inputs[: len(names)], strict=True))
            rest = iter(inputs[len(names) :])
            call_args = list(args)
            for i in tensor_args:
                call_args[i] = next(rest)
            call_kwargs = dict(kwargs)
            for k in tensor_kwargs:
                call_kwargs[k] = next(rest)
            losses, surrogates = [], []
            from_leaves = _FromLeaves(leaf_inputs, transforms)
            with from_leaves, keep_draws:
                for model_trace, guide_trace in self._get_traces(
                    model, guide, tuple(call_args), call_kwargs
                ):
                    loss, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
                    losses.append(loss)
                    surrogates.append(surrogate)
            loss = _particle_mean(losses, self.num_particles)
            surrogate = _particle_mean(surrogates, self.num_particles)
            # The parameter values read are outputs too: the param sites replayed after each
            # run (see _read_params) then cost no transform of their own.
            values = tuple(from_leaves.first_values.get(n, leaf_inputs[n]) for n in names)
            draws = tuple(keep_draws.draws)
            keep_draws.draws.clear()
            return (torch.as_tensor(loss), torch.as_tensor(surrogate)) + values + draws

        compiled = _Compiled(
            None, names, [leaf.shape for leaf in leaves], tensor_args, tensor_kwargs
        )
        inputs = compiled.inputs(tuple(leaves), args, kwargs)
        torch.set_rng_state(rng)
        with warnings.catch_warnings():
            # torch marks jit.trace as deprecated in favour of torch.compile; the trace is an
            # implementation detail here, so that warning says nothing to the user.
            warnings.filterwarnings("ignore", message=".*torch.jit.trace. is deprecated")
            if self.ignore_jit_warnings:
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            with block():
                # check_trace would rerun the graph and compare: random ops never agree.
                options = {"check_trace": False, **(self.jit_options or {})}
                graph = torch.jit.trace(loss_and_surrogate, inputs, **options)
        # No optimization passes, not even constant propagation: it ends by removing dead
        # code, and a random op whose result goes unused (``param("m", torch.randn(3))`` once
        # "m" exists) still moves the random number generator in eager mode.
        torch.set_rng_state(rng)
        compiled.graph = graph
        self.compile_seconds.append(time.perf_counter() - start)
        return compiled

    def _run(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple:
        """``(loss, surrogate, read)`` from the graph of this signature (compiled if new); ``read``
        replays the param sites (see :meth:`_read_params`)."""
        key = self._key(model, guide, args, kwargs)
        compiled = self._graphs.pop(key, None)
        store = get_param_store()
        leaves = self._leaves(compiled, store) if compiled is not None else None
        if leaves is None:
            compiled = self._compile(model, guide, args, kwargs)
            leaves = self._leaves(compiled, store)
        # Most recently used last; the oldest graph goes once there are MAX_GRAPHS.
        self._graphs[key] = compiled
        if len(self._graphs) > self.MAX_GRAPHS:
            del self._graphs[next(iter(self._graphs))]
        inputs = compiled.inputs(leaves, args, kwargs)
        # No JIT optimization passes: the graph runs op by op on the eager kernels, and autograd
        # records it as it would record eager code (bitwise the same gradients).
        with torch.jit.optimized_execution(False):
            loss, surrogate, *values = compiled.graph(*inputs)
        values = values[: len(compiled.names)]  # the rest are draws kept alive
        return loss, surrogate, (compiled.names, values, leaves)

    @staticmethod
    def _leaves(compiled: _Compiled, store: Any) -> tuple | None:
        """The store's current leaves for the graph's parameters; None if the graph is stale
        (a parameter was removed or re-created with another shape)."""
        try:
            leaves = tuple(store.unconstrained(n) for n in compiled.names)
        except KeyError:
            return None
        if any(leaf.shape != shape for leaf, shape in zip(leaves, compiled.shapes, strict=True)):
            return None
        return leaves

    @staticmethod
    def _read_params(read: tuple) -> None:
        """Replay the param sites the graph read, so that handlers around the loss (SVI's
        parameter capture) see them; the values are the graph's, with ``.unconstrained()``."""
        if not am_i_wrapped():
            return
        store = get_param_store()
        for name, value, leaf in zip(*read, strict=True):
            if value is not leaf:
                value.unconstrained = weakref.ref(leaf)
            msg = new_message("param", name, store.get_param, args=(name,), value=value)
            msg["done"] = True
            apply_stack(msg)

    def _check_finite(
        self, value: float, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> None:
        if math.isfinite(value):
            return
        # Report from an eager run (other draws, same parameters): the graph keeps no traces.
        with torch.random.fork_rng(), torch.no_grad(), block():
            particles = list(self._get_traces(model, guide, args, kwargs))
        raise_nonfinite(value, particles=particles)

    # ---- the public interface --------------------------------------------------------------
    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss (negative ELBO) as a float, without gradients."""
        with torch.no_grad():
            loss, _, read = self._run(model, guide, args, kwargs)
            value = float(loss)
        self._check_finite(value, model, guide, args, kwargs)
        self._read_params(read)
        return value

    def differentiable_loss(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """The loss as a tensor whose gradients are unbiased ELBO gradients."""
        loss, surrogate, read = self._run(model, guide, args, kwargs)
        self._check_finite(float(loss), model, guide, args, kwargs)
        self._read_params(read)
        return loss + (surrogate - surrogate.detach())

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss as a float; gradients accumulate on the parameters' unconstrained leaves."""
        loss, surrogate, read = self._run(model, guide, args, kwargs)
        value = float(loss)
        self._check_finite(value, model, guide, args, kwargs)
        if surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        self._read_params(read)
        return value
