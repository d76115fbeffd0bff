"""``JitTrace_ELBO``, ``JitTraceMeanField_ELBO``: the ELBO captured once per input signature as
a graph of ATen operations, and that graph replayed at every later call.

One evaluation of an ELBO is a function of the parameters' unconstrained leaves and the tensor
arguments: run the guide, replay the model, add up log densities. :func:`~miniprob.infer.
compiled.capture` records it once (``make_fx`` on fake tensors, no ``torch.jit``); later calls
run the recorded operations with no Python in between, so the cost of handlers, messages,
traces and ``torch.distributions`` objects disappears. ``loss_and_grads`` records the backward
pass too (``torch.autograd.grad``) and puts the gradients on the leaves. The graph runs op by
op on torch's eager kernels, random ops included: values, gradients and draws are bitwise those
of ``Trace_ELBO`` (the RNG state is rewound after discovering the parameters). For fused
kernels and the optimizer's update in the same program, use ``SVI(..., compile=True)``.

What a capture cannot see, it refuses or bakes in. Python branching on a tensor's value cannot
be captured: that signature runs eagerly, with a :class:`~miniprob.infer.compiled.
CompileWarning` naming the reason. The structure of the first call is repeated (no parameter
that first appears at a later call), and a tensor read from a global is a constant of the
graph. A new signature - another shape, stride, dtype or device of a tensor argument, another
value of a non-tensor argument, as with a smaller last minibatch - is captured afresh (the last
``MAX_GRAPHS`` are kept, and a graph dropped is freed). Validation runs while discovering the
parameters; a non-finite loss is still caught at every call.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import SVI, JitTrace_ELBO
    >>> from miniprob.optim import Adam
    >>> pyro.clear_param_store()
    >>> pyro.set_rng_seed(0)
    >>> def model(data):
    ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(data)):
    ...         pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)
    >>> def guide(data):
    ...     pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))
    >>> svi = SVI(model, guide, Adam({"lr": 0.1}), JitTrace_ELBO())
    >>> data = 3.0 + torch.randn(100)
    >>> losses = [svi.step(data) for _ in range(200)]
    >>> abs(pyro.param("m").item() - data.mean().item()) < 0.3
    True
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch

from ..params import get_param_store
from ..poutine.handlers import block
from ..runtime import Message, Messenger, am_i_wrapped, apply_stack, new_message
from .compiled import (
    CaptureError,
    CompileWarning,
    Inputs,
    _check_no_leaf_constants,
    call_signature,
    capture,
    loss_and_grads_function,
    objective,
)
from .diagnostics import raise_nonfinite
from .trace_elbo import Trace_ELBO
from .trace_mean_field_elbo import TraceMeanField_ELBO


class _ReadParams(Messenger):
    """Record the names of the store parameters read inside (those with an unconstrained leaf)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, None] = {}

    def postprocess_message(self, msg: Message) -> None:
        if msg["type"] == "param":
            self.names[msg["name"]] = None


class _Graph:
    """One captured graph, its parameters (names, leaves) and where its tensor inputs are."""

    def __init__(self, graph: Any, inputs: Inputs, leaves: list[torch.Tensor]) -> None:
        self.graph = graph
        self.inputs = inputs
        self.leaves = leaves


class _CapturedELBO:
    """The capture and replay shared by the ``JitTrace`` ELBOs (mixed in before the ELBO)."""

    _replays_captured_graphs = True

    MAX_GRAPHS = 32
    """Graphs kept (one per input signature and kind), the least recently used dropped first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._graphs: dict[Hashable, _Graph] = {}
        self._eager: dict[Hashable, str] = {}  # signatures that could not be captured, and why
        self.compile_seconds: list[float] = []

    # ---- capturing -------------------------------------------------------------------------
    def _traces_seen(self, model_trace: Any, guide_trace: Any) -> None:
        """What an ELBO notes of the eager traces its capture follows (nothing, by default)."""

    def _capture(
        self, with_grads: bool, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> _Graph:
        start = time.perf_counter()
        if self.vectorize_particles and self.max_plate_nesting == float("inf"):
            # Eager mode guesses at its first step, drawing as it goes: so does this.
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        rng = torch.get_rng_state()
        try:
            # 1. Find the parameters (creating them on a first call) by running the ELBO once.
            reads = _ReadParams()
            with block(), reads, torch.no_grad():
                for traces in self._get_traces(model, guide, args, kwargs):
                    self._traces_seen(*traces)
            store = get_param_store()
            names = [n for n in reads.names if n in store]
            leaves = [store.unconstrained(n) for n in names]
            inputs = Inputs(names, args, kwargs)
            # 2. Capture the ELBO as a function of (leaves, tensor arguments).
            if with_grads:
                fn = loss_and_grads_function(self, model, guide, inputs, leaves)
            else:

                def fn(*tensors: torch.Tensor) -> tuple:
                    call_args, call_kwargs = inputs.call(tensors[len(names) :])
                    with torch.enable_grad(), inputs.reading(tensors[: len(names)], leaves):
                        return objective(self, model, guide, call_args, call_kwargs)

            graph = capture(fn, [*leaves, *inputs.data(args, kwargs)])
            _check_no_leaf_constants(graph, dict(zip(names, leaves, strict=True)))
        finally:
            torch.set_rng_state(rng)
        self.compile_seconds.append(time.perf_counter() - start)
        return _Graph(graph, inputs, leaves)

    def _graph(
        self, with_grads: bool, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> _Graph | None:
        """The graph of this signature (captured if new or stale); None where it could not be
        captured (the caller runs the eager ELBO)."""
        key = (with_grads, model, guide, call_signature(args, kwargs))
        if key in self._eager:
            return None
        graph = self._graphs.pop(key, None)
        if graph is not None and not self._fresh(graph):
            graph = None
        if graph is None:
            try:
                graph = self._capture(with_grads, model, guide, args, kwargs)
            except CaptureError as e:
                self._eager[key] = str(e)
                warnings.warn(
                    f"{type(self).__name__}: this call runs eagerly, it could not be captured: {e}",
                    CompileWarning,
                    stacklevel=4,
                )
                return None
        # Most recently used last; the oldest graph goes once there are MAX_GRAPHS.
        self._graphs[key] = graph
        if len(self._graphs) > self.MAX_GRAPHS:
            del self._graphs[next(iter(self._graphs))]
        return graph

    @staticmethod
    def _fresh(graph: _Graph) -> bool:
        """Whether the store still holds the graph's leaves (not removed, nor re-created)."""
        params = get_param_store()._params
        return all(
            params.get(n) is leaf for n, leaf in zip(graph.inputs.names, graph.leaves, strict=True)
        )

    @staticmethod
    def _read_params(graph: _Graph) -> None:
        """Replay the param sites the graph read, so that handlers around the loss (SVI's
        parameter capture) see them."""
        if not am_i_wrapped():
            return
        store = get_param_store()
        for name in graph.inputs.names:
            msg = new_message("param", name, store.get_param, args=(name,), value=store[name])
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

    def _replay(self, graph: _Graph, args: tuple, kwargs: dict) -> tuple:
        return graph.graph(*graph.leaves, *graph.inputs.data(args, kwargs))

    # ---- the public interface --------------------------------------------------------------
    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss (negative ELBO) as a float, without gradients."""
        graph = self._graph(False, model, guide, args, kwargs)
        if graph is None:
            return super().loss(model, guide, *args, **kwargs)
        with torch.no_grad():
            value = float(self._replay(graph, args, kwargs)[0])
        self._check_finite(value, model, guide, args, kwargs)
        self._read_params(graph)
        return value

    def differentiable_loss(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """The loss as a tensor whose gradients are unbiased ELBO gradients."""
        graph = self._graph(False, model, guide, args, kwargs)
        if graph is None:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        loss, surrogate = self._replay(graph, args, kwargs)
        self._check_finite(float(loss), model, guide, args, kwargs)
        self._read_params(graph)
        return loss + (surrogate - surrogate.detach())

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss as a float; gradients accumulate on the parameters' unconstrained leaves."""
        graph = self._graph(True, model, guide, args, kwargs)
        if graph is None:
            return super().loss_and_grads(model, guide, *args, **kwargs)
        with torch.no_grad():
            loss, *grads = self._replay(graph, args, kwargs)
        value = float(loss)
        self._check_finite(value, model, guide, args, kwargs)
        for leaf, grad in zip(graph.leaves, grads, strict=True):
            if grad is not None:
                leaf.grad = grad if leaf.grad is None else leaf.grad + grad
        self._read_params(graph)
        return value


class JitTrace_ELBO(_CapturedELBO, Trace_ELBO):
    """``Trace_ELBO`` captured once per input signature and replayed (see the module).

    Same arguments as :class:`~miniprob.infer.ELBO` (``ignore_jit_warnings`` and
    ``jit_options`` are accepted for Pyro's sake; there is no ``torch.jit`` to pass them to).
    ``compile_seconds`` holds the time each capture took.
    """


class JitTraceMeanField_ELBO(_CapturedELBO, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` captured once per input signature and replayed (see the
    module)."""
