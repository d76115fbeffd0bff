"""Compiled SVI steps: the whole step captured once per input signature, replayed as one program.

An SVI step is a pure function of tensors: the parameters' unconstrained leaves, the optimizer's
state and the tensor arguments go in; the loss comes out, and the leaves and the state are
updated. miniprob's handlers, messages, traces and distribution objects only decide *which*
tensor operations run. :func:`capture` runs the step's Python once under
``torch.fx.experimental.proxy_tensor.make_fx`` on fake tensors (shapes and dtypes, no data),
which records every ATen operation it dispatches - the forward pass, the backward pass of
``torch.autograd.grad``, the optimizer's update - into one ``torch.fx`` graph, with the
parameters read from the graph's inputs (``param`` statements through a handler, ``pyro.module``
networks through their forward hooks). :class:`CompiledStep` hands that graph to TorchInductor
(``torch._inductor.compile_fx``, no TorchDynamo in between: the graph is already ATen, and
each call skips Dynamo's guards), which fuses it into a few kernels and builds them, with the
code that calls them, as one C++ program; that program runs at every later step with the same
signature. The handler stack never runs again, so none of its context
variables meets a tracer.

What capture cannot see, it refuses rather than bakes in wrongly: fake tensors have no values,
so Python that branches on one (``if x.item() > 0``, ``bool(tensor)``) raises while capturing,
and that signature runs eagerly from then on, with a :class:`CompileWarning` that names the
reason. A network that reads its weights outside its ``forward`` is refused the same way. Like
``torch.jit.trace``, a capture repeats the first step's structure: a model whose structure
changes without its inputs changing (a Python counter) must not be compiled.

The first step of each signature runs eagerly (it creates the parameters, validates the model
against the guide, and gives the optimizer its state); the graph is captured after it. A new
signature (another shape, dtype or stride of a tensor argument, another value of any other
argument), a parameter re-created with another shape, or a store that gained or lost parameters
compiles anew; the last :attr:`CompiledStep.MAX_PROGRAMS` programs are kept.

The optimizer's update is in the program for ``torch.optim.Adam`` (default flags, any rate,
betas, eps, weight decay, ``maximize``) and ``ClippedAdam``, with ``PyroOptim``'s per-parameter
arguments and clipping: the state tensors stay ``torch.optim``'s (checkpoints, ``get_state``
and LR schedulers see them; the rate is an input of the program, the other hyperparameters are
baked in and checked at every step). The parameters that share hyperparameters, a step count
and a rate are updated as one flat tensor (:mod:`miniprob.optim.flat_update`: they and their
state move into flat buffers, the parameters staying the same tensor objects), so the update
costs the compile one loop, not one per parameter. Any other optimizer gets a program of the
loss and the gradients and steps eagerly. A ``MultiOptimizer`` is driven by its own
``step(loss, params)`` outside SVI: there is no step to compile there. A
``DistributedOptimizer`` (its own call averages the gradients over the ranks) gets the program
of the loss and the gradients, and its call steps eagerly. A compiled update is guarded by the
loss being finite: a step whose loss is not raises (naming the sites, from an eager rerun) and
changes nothing. Programs dropped from the cache are freed, but TorchInductor keeps the kernels it
loaded for the life of the process.

What compiles whole: ``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceEnum_ELBO`` (the enumerated
sums are tensor operations; a guide-side value without weight has its cost zeroed with
``torch.where`` instead of dropped after reading the weights), the ``JitTrace*`` ELBOs, with
every autoguide and ``PyroModule`` model, and ``TraceGraph_ELBO``: it follows a
non-reparameterized site's value through a tensor subclass, which fake tensors cannot be, so
the capture takes the dependencies its eager step found (a guide site with a decaying-average
baseline, which replaces a param-store entry during the step, runs eagerly with the warning).

Random draws inside a compiled program come from TorchInductor's own generator, seeded from
torch's: a compiled run is reproducible under one seed and reaches the posterior of an eager
run, but it does not draw the eager run's numbers, and its sums may round differently.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import SVI, Trace_ELBO
    >>> from miniprob.optim import Adam
    >>> import torch
    >>> capture(lambda x: (x.sin() * 2,), [torch.ones(3)]).code.count("aten.sin")
    1
"""

from __future__ import annotations

import math
import operator
import os
import time
import traceback
import warnings
from collections.abc import Callable, Hashable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes

from .. import validation
from ..optim.clipped_adam import ClippedAdam
from ..optim.flat_update import FlatGroup, disjoint, supported
from ..optim.optim import PyroOptim
from ..params import _transform_for, get_param_store
from ..poutine.handlers import block
from ..runtime import Message, Messenger
from .elbo import ELBO, VALUES_READABLE, _particle_mean

__all__ = ["CaptureError", "CompileWarning", "CompiledStep", "capture", "signature"]


class CompileWarning(UserWarning):
    """A step that could not be compiled runs eagerly; the message says why."""


class CaptureError(RuntimeError):
    """The step's Python could not be captured as a graph (the message says why)."""


# ---- signatures ------------------------------------------------------------------------------
def signature(value: Any, nested: bool = False) -> Hashable:
    """What a program captured for ``value`` depends on.

    A top-level tensor is an input of the program: its shape, stride, dtype, device and
    ``requires_grad`` count. Anything else is baked into it: a tensor inside a list by its
    identity and version, a list, tuple or dict by its contents (so an edited list is seen),
    another hashable value by its value, anything else by its identity.

    Example::

        >>> import torch
        >>> signature(torch.zeros(2, 3)) == signature(torch.ones(2, 3))
        True
        >>> signature(torch.zeros(2, 3)) == signature(torch.zeros(3, 2).t())
        False
    """
    if isinstance(value, torch.Tensor):
        if nested:
            try:
                version = value._version
            except RuntimeError:  # an inference tensor: it cannot change
                version = None
            return ("nested tensor", id(value), version)
        return (
            "tensor",
            value.shape,
            value.stride(),
            value.dtype,
            value.device,
            value.requires_grad,
        )
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(signature(v, True) for v in value))
    if isinstance(value, dict):
        return (type(value), tuple((k, signature(v, True)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return ("value", type(value), value)


def call_signature(args: tuple, kwargs: dict) -> Hashable:
    """:func:`signature` of a call's arguments."""
    return (
        tuple(signature(a) for a in args),
        tuple((k, signature(v)) for k, v in sorted(kwargs.items())),
    )


# ---- capture ----------------------------------------------------------------------------------
class _ParamsFromInputs(Messenger):
    """Give each named param site ``transform(input)``, as the store would from its leaf: while
    capturing, the inputs are the graph's, so the sites depend on them and not on the store."""

    def __init__(self, inputs: dict[str, torch.Tensor], transforms: dict[str, Any]) -> None:
        super().__init__()
        self.inputs = inputs
        self.transforms = transforms

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "param" and not msg["done"] and msg["name"] in self.inputs:
            name = msg["name"]
            msg["value"] = self.transforms[name](self.inputs[name])
            msg["done"] = True


_BUFFERS_SEEN: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
"""The buffers of the networks run while capturing, with their values before: a forward that
writes into its buffers (batch norm's statistics) writes into the real ones even on fake
inputs, so :func:`capture` puts them back."""


@contextmanager
def _modules_read_inputs(inputs_by_leaf: dict[int, torch.Tensor]):
    """While inside, a network whose ``nn.Parameter`` is a key (by ``id``) computes its forward
    with the mapped tensor instead (``pyro.module`` networks use their own parameters, not what
    ``param`` returns)."""
    swapped: list[list] = []

    def before(module: torch.nn.Module, args: Any) -> None:
        for buffer in module._buffers.values():
            if buffer is not None and id(buffer) not in _BUFFERS_SEEN:
                with _disable_current_modes():  # a real copy, not a fake one
                    _BUFFERS_SEEN[id(buffer)] = (buffer, buffer.detach().clone())
        own = module._parameters
        changes = [(k, p) for k, p in own.items() if id(p) in inputs_by_leaf]
        for key, p in changes:
            own[key] = inputs_by_leaf[id(p)]
        swapped.append([module, changes])

    def after(module: torch.nn.Module, args: Any, output: Any) -> None:
        owner, changes = swapped.pop()
        for key, p in changes:
            owner._parameters[key] = p

    pre = torch.nn.modules.module.register_module_forward_pre_hook(before)
    post = torch.nn.modules.module.register_module_forward_hook(after, always_call=True)
    try:
        yield
    finally:
        pre.remove()
        post.remove()


def capture(fn: Callable[..., tuple], inputs: Sequence[torch.Tensor]) -> torch.fx.GraphModule:
    """``fn(*inputs)`` recorded as a graph of ATen operations (``make_fx`` on fake tensors).

    Validation is off while capturing (it reads values). Anything that needs a value - Python
    control flow on a tensor, ``.item()``, a data-dependent output shape - raises
    :class:`CaptureError` naming it. ``fn`` must return a tuple of tensors.

    Example::

        >>> import torch
        >>> graph = capture(lambda x: (x.exp().sum(),), [torch.zeros(3)])
        >>> graph(torch.zeros(3))[0].item()
        3.0
        >>> capture(lambda x: (x if x.sum() > 0 else -x,), [torch.zeros(3)])
        Traceback (most recent call last):
        ...
        miniprob.infer.compiled.CaptureError: ...
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    was_validating = validation.is_validation_enabled()
    validation.enable_validation(False)
    VALUES_READABLE[0] = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return make_fx(fn, tracing_mode="fake", _allow_non_fake_inputs=True)(*inputs)
    except Exception as e:  # whatever needed a value: the reason goes to the user
        raise CaptureError(_reason(e)) from e
    finally:
        with torch.no_grad():
            for buffer, value in _BUFFERS_SEEN.values():
                buffer.copy_(value)
        _BUFFERS_SEEN.clear()
        VALUES_READABLE[0] = True
        validation.enable_validation(was_validating)


def _reason(error: Exception) -> str:
    """Why a capture failed, and where in the user's code (the last frame outside torch and
    miniprob)."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    if "data-dependent" in text or "DataDependent" in type(error).__name__:
        first = f"Python reads a tensor's value (.item(), bool(), `if` on a tensor): {first}"
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if not f.filename.startswith((package, os.path.dirname(torch.__file__)))
        and "contextlib" not in f.filename
    ]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line})" if frames else ""
    return f"{type(error).__name__}: {first}{where}"


def _check_no_leaf_constants(graph: torch.fx.GraphModule, leaves: dict[str, torch.Tensor]) -> None:
    """A parameter the graph holds as a constant was read behind the capture's back (a network
    used other than through its forward): its program would never see it change."""

    def owner(constant: torch.Tensor) -> str | None:
        ptr, start = constant.untyped_storage().data_ptr(), constant.storage_offset()
        for name, leaf in leaves.items():  # leaves in a flat group share one storage
            begin = leaf.storage_offset()
            if leaf.untyped_storage().data_ptr() == ptr and begin <= start < begin + leaf.numel():
                return name
        return None

    for node in graph.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op == "call_function" and schema is not None and schema.is_mutable:
            written = [a for a in node.args if isinstance(a, torch.fx.Node) and a.op == "get_attr"]
            if written:
                raise CaptureError(
                    f"the step writes in place ({schema.name}) into a tensor that is not one of "
                    "its inputs (a network's buffer, such as batch norm's running statistics?): "
                    "a program would write into a copy"
                )
        if node.op != "get_attr":
            continue
        constant = getattr(graph, node.target, None)
        if isinstance(constant, torch.Tensor) and constant.numel():
            name = owner(constant)
            if name is not None:
                raise CaptureError(
                    f"param '{name}' is read other than through pyro.param or its network's "
                    "forward, so a program would hold it as a constant"
                )


# ---- the objective, as a function of the inputs ------------------------------------------------
def objective(
    loss: Any, model: Callable, guide: Callable, args: tuple, kwargs: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss value, surrogate)`` of one evaluation: for an ELBO that keeps the base class's
    particle loop, its particles (without the eager checks that read values); for any other
    loss, its ``differentiable_loss`` (or its call) as both."""
    if isinstance(loss, ELBO) and (
        type(loss).differentiable_loss is ELBO.differentiable_loss
        or getattr(loss, "_replays_captured_graphs", False)  # JitTrace_ELBO: its own particles
    ):
        losses, surrogates = [], []
        for model_trace, guide_trace in loss._get_traces(model, guide, args, kwargs):
            value, surrogate = loss._differentiable_loss_particle(model_trace, guide_trace)
            losses.append(value)
            surrogates.append(surrogate)
        value = torch.as_tensor(_particle_mean(losses, loss.num_particles))
        surrogate = torch.as_tensor(_particle_mean(surrogates, loss.num_particles))
        return value, surrogate
    fn = loss.differentiable_loss if isinstance(loss, ELBO) else loss
    value = torch.as_tensor(fn(model, guide, *args, **kwargs))
    return value.detach(), value


class Inputs:
    """Where a program's tensor inputs come from: parameter leaves by name, then the tensor
    arguments of the call (positions and keywords); other arguments are baked in."""

    def __init__(self, names: list[str], args: tuple, kwargs: dict) -> None:
        store = get_param_store()
        self.names = names
        self.transforms = {n: _transform_for(n, store.get_constraint(n)) for n in names}
        self.tensor_args = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        self.tensor_kwargs = sorted(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
        self.args = args
        self.kwargs = kwargs

    def data(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        return [args[i] for i in self.tensor_args] + [kwargs[k] for k in self.tensor_kwargs]

    def call(self, data: Sequence[torch.Tensor]) -> tuple[tuple, dict]:
        """The call's arguments with its tensors replaced by ``data``."""
        rest = iter(data)
        args = list(self.args)
        for i in self.tensor_args:
            args[i] = next(rest)
        kwargs = dict(self.kwargs)
        for k in self.tensor_kwargs:
            kwargs[k] = next(rest)
        return tuple(args), kwargs

    @contextmanager
    def reading(self, leaves: Sequence[torch.Tensor], store_leaves: Sequence[torch.Tensor]):
        """Param sites and networks read ``leaves`` (the graph's) in place of ``store_leaves``."""
        by_name = dict(zip(self.names, leaves, strict=True))
        by_leaf = {id(s): x for s, x in zip(store_leaves, leaves, strict=True)}
        with block(), _ParamsFromInputs(by_name, self.transforms), _modules_read_inputs(by_leaf):
            yield


def loss_and_grads_function(
    loss: Any,
    model: Callable,
    guide: Callable,
    inputs: Inputs,
    store_leaves: Sequence[torch.Tensor],
) -> Callable[..., tuple]:
    """``f(*leaves, *data) -> (loss, *grads)``: the loss and the gradient of its surrogate for
    every leaf (``None`` where the leaf does not reach it)."""
    num = len(inputs.names)

    def loss_and_grads(*tensors: torch.Tensor) -> tuple:
        leaves = [t.detach().requires_grad_() for t in tensors[:num]]
        args, kwargs = inputs.call(tensors[num:])
        with torch.enable_grad(), inputs.reading(leaves, store_leaves):
            value, surrogate = objective(loss, model, guide, args, kwargs)
        if surrogate.requires_grad:
            grads = torch.autograd.grad(surrogate, leaves, allow_unused=True)
        else:
            grads = (None,) * num
        return (value, *grads)

    return loss_and_grads


def _whole_step(program: _Program, grads_fn: Callable, num_data: int) -> Callable:
    """The whole step as one function: loss, gradients, clipping, the update in place. Its
    inputs: the leaves it does not update, the data, each group's buffers, the rates."""
    num, num_free, groups = len(program.names), len(program.free), program.groups

    def whole_step(*tensors: torch.Tensor) -> tuple:
        free, data = tensors[:num_free], tensors[num_free : num_free + num_data]
        at, rates = num_free + num_data, tensors[-1]
        leaves: list[torch.Tensor | None] = [None] * num
        buffers = []
        for group in groups:
            buffers.append(tensors[at : at + len(group.inputs)])
            at += len(group.inputs)
            for i, view in zip(group.indices, group.views(buffers[-1][0]), strict=True):
                leaves[i] = view
        rest = iter(free)
        leaves = [next(rest) if leaf is None else leaf for leaf in leaves]
        loss, *grads = grads_fn(*leaves, *data)
        ok = torch.isfinite(loss)
        for k, (group, inputs) in enumerate(zip(groups, buffers, strict=True)):
            group.update(inputs, [grads[i] for i in group.indices], rates[k], ok)
        return (loss,)

    return whole_step


def _captured(fn: Callable[..., tuple], example: list[torch.Tensor]) -> torch.fx.GraphModule:
    """:func:`capture`, leaving torch's generator as it was."""
    rng = torch.get_rng_state()
    try:
        with torch.no_grad():
            return capture(fn, example)
    finally:
        torch.set_rng_state(rng)


def _next_rate(opt: torch.optim.Optimizer, leaf: torch.Tensor, advance: bool) -> float:
    """The rate of ``leaf``'s next step: the lr (Adam), or the signed step size (ClippedAdam,
    whose decayed rate and step count are Python numbers in its state, moved on here when
    ``advance``)."""
    group = opt.param_groups[0]
    if type(opt) is not ClippedAdam:
        return group["lr"]
    state = opt.state[leaf]
    lr, step = state["lr"] * group["lrd"], state["step"] + 1
    if advance:
        state["lr"], state["step"] = lr, step
    beta1, beta2 = group["betas"]
    return -lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)


def _had_grad(leaf: torch.Tensor) -> bool:
    return getattr(leaf, "_miniprob_had_grad", False)


class _Program:
    """One captured and compiled step: its parameters, its optimizer plan, the callable."""

    def __init__(self, names: list[str], leaves: list[torch.Tensor], store_size: int) -> None:
        self.names = names
        self.leaves = leaves
        self.store_size = store_size
        self.fn: Callable[..., Any] | None = None
        self.fused = False
        self.stepped: list[int] = []  # leaves with a gradient (indices into names), by group
        self.groups: list[FlatGroup] = []  # the stepped leaves, updated as flat tensors
        self.free: list[torch.Tensor] = []  # the leaves the program reads and does not update
        self.skipped: list[tuple] = []  # (optimizer, leaf) read without a gradient
        self.rates: tuple = ()
        self.rate_tensor: torch.Tensor | None = None
        self.inputs: Inputs | None = None
        self.compile_seconds = 0.0

    def buffers(self) -> list[torch.Tensor]:
        """The groups' flat buffers, in the program's order."""
        return [t for group in self.groups for t in group.inputs]


class CompiledStep:
    """The compiled steps of one :class:`~miniprob.infer.SVI`: ``step(args, kwargs)`` runs the
    program of the call's signature, compiling it after the signature's first (eager) step.

    :param svi: the SVI object (its model, guide, optimizer and loss).
    :param backend: ``"inductor"`` compiles each captured graph with TorchInductor;
        ``"aten"`` runs the captured graph as it is (op by op: quick to build, slower to run).
    """

    MAX_PROGRAMS = 32
    """Programs kept (one per signature), the least recently used dropped first."""

    def __init__(self, svi: Any, backend: str = "inductor") -> None:
        if backend not in ("inductor", "aten"):
            raise ValueError(f"compile backend must be 'inductor' or 'aten', got {backend!r}")
        self.svi = svi
        self.backend = backend
        self._programs: dict[Hashable, _Program] = {}
        self._eager: dict[Hashable, str] = {}  # signatures that fell back, and why
        self.compile_seconds: list[float] = []

    # ---- the step ---------------------------------------------------------------------------
    def step(self, args: tuple, kwargs: dict) -> float:
        """One step: the program of this signature if there is a fresh one, else an eager step
        (after which the signature is compiled, unless it fell back before)."""
        svi = self.svi
        key = (svi.model, svi.guide, call_signature(args, kwargs))
        program = self._programs.pop(key, None)
        if program is not None and self._fresh(program):
            self._programs[key] = program
            return self._run(program, args, kwargs)
        loss = svi._eager_step(args, kwargs)
        if key not in self._eager:
            try:
                program = self._build(args, kwargs)
            except CaptureError as e:
                self._eager[key] = str(e)
                warnings.warn(
                    f"SVI(compile=True): this step runs eagerly, it could not be compiled: {e}",
                    CompileWarning,
                    stacklevel=3,
                )
                return loss
            self._programs[key] = program
            if len(self._programs) > self.MAX_PROGRAMS:
                del self._programs[next(iter(self._programs))]
        return loss

    def _fresh(self, program: _Program) -> bool:
        store = get_param_store()
        if len(store) != program.store_size:
            return False
        params = store._params
        try:
            return all(map(operator.is_, (params[n] for n in program.names), program.leaves))
        except KeyError:
            return False

    def _run(self, program: _Program, args: tuple, kwargs: dict) -> float:
        data = program.inputs.data(args, kwargs)
        if not program.fused:
            return self._run_grads(program, data, args, kwargs)
        if not self._state(program):  # the optimizer changed under the program: compile anew
            self._programs = {k: p for k, p in self._programs.items() if p is not program}
            return self.step(args, kwargs)
        rates = self._rates(program)
        if rates is None:  # a group's rates came apart (per-parameter schedules): regroup
            self._programs = {k: p for k, p in self._programs.items() if p is not program}
            return self.step(args, kwargs)
        if rates != program.rates:
            program.rates = rates
            program.rate_tensor = torch.tensor(rates, dtype=torch.float64)
        with torch.no_grad():
            (loss,) = program.fn(*program.free, *data, *program.buffers(), program.rate_tensor)
        for group in program.groups:
            group.seen()
        for opt, leaf in program.skipped:
            note = getattr(opt, "note_skipped", None)
            if note is not None:
                note([leaf])
        value = float(loss)
        if not math.isfinite(value):
            self._undo_clipped_adam(program)
            self._report_nonfinite(value, args, kwargs)
        return value

    def _run_grads(
        self, program: _Program, data: list[torch.Tensor], args: tuple, kwargs: dict
    ) -> float:
        """A program of the loss and the gradients; the optimizer steps eagerly (its own
        ``__call__``: a ``DistributedOptimizer`` averages the gradients over the ranks there, and
        hears of a failed step as in an eager one)."""
        svi = self.svi
        leaves = program.leaves
        try:
            with torch.no_grad():
                loss, *grads = program.fn(*leaves, *data)
            value = float(loss)
            if not math.isfinite(value):
                self._report_nonfinite(value, args, kwargs)
            for i, grad in zip(program.stepped, grads, strict=True):
                leaves[i].grad = grad
            svi.optim(leaves)
        except BaseException as error:
            svi.optim._step_failed(error)
            raise
        finally:
            for leaf in leaves:
                leaf.grad = None
        return value

    # ---- optimizer plumbing --------------------------------------------------------------------
    def _state(self, program: _Program) -> bool:
        """Whether the program's optimizer plan still holds (each leaf's optimizer, its
        hyperparameters, state of the captured shapes), its groups' buffers synced."""
        owner = self.svi.optim._owner
        for group in program.groups:
            states = []
            for leaf, opt in zip(group.leaves, group.optimizers, strict=True):
                entry = owner.get(leaf)
                if entry is None or entry[1] is not opt:
                    return False
                state = opt.state.get(leaf)
                if not state:
                    return False
                states.append(state)
            if not group.sync(states):
                return False
        return True

    @staticmethod
    def _rates(program: _Program, advance: bool = True) -> tuple | None:
        """Per group, its leaves' rate for the next step (see :func:`_next_rate`); None, with
        nothing advanced, where they differ within a group (per-parameter schedules)."""
        rates = []
        for group in program.groups:
            pairs = zip(group.leaves, group.optimizers, strict=True)
            own = {_next_rate(opt, leaf, advance=False) for leaf, opt in pairs}
            if len(own) != 1:
                return None
            rates.append(own.pop())
        if advance:
            for group in program.groups:
                if group.clipped_adam:
                    for leaf, opt in zip(group.leaves, group.optimizers, strict=True):
                        _next_rate(opt, leaf, advance=True)
        return tuple(rates)

    @staticmethod
    def _undo_clipped_adam(program: _Program) -> None:
        """Take back what :meth:`_rates` advanced in ``ClippedAdam``'s Python state."""
        for group in program.groups:
            for leaf, opt in zip(group.leaves, group.optimizers, strict=True):
                if type(opt) is ClippedAdam:
                    state = opt.state[leaf]
                    state["lr"] /= opt.param_groups[0]["lrd"]
                    state["step"] -= 1

    def _report_nonfinite(self, value: float, args: tuple, kwargs: dict) -> None:
        """Raise with the eager report (other draws, the same parameters: a program keeps no
        traces); the program changed nothing."""
        from .diagnostics import raise_nonfinite

        svi = self.svi
        loss = svi._elbo
        particles = None
        if isinstance(loss, ELBO):
            with torch.random.fork_rng(), torch.no_grad(), block():
                particles = list(loss._get_traces(svi.model, svi.guide, args, kwargs))
        raise_nonfinite(value, particles=particles)

    # ---- building a program ---------------------------------------------------------------------
    def _build(self, args: tuple, kwargs: dict) -> _Program:
        """Capture and compile the step of this signature, after an eager step of it (which
        created the parameters and the optimizer's state)."""
        start = time.perf_counter()
        svi = self.svi
        store = get_param_store()
        names = [n for n in svi._last_read if n in store]
        leaves = [store.unconstrained(n) for n in names]
        program = _Program(names, leaves, len(store))
        program.inputs = inputs = Inputs(names, args, kwargs)
        data = inputs.data(args, kwargs)
        loss = svi._elbo if svi._elbo is not None else svi.loss
        grads_fn = loss_and_grads_function(loss, svi.model, svi.guide, inputs, leaves)
        # The leaves the eager step gave a gradient (now or in an earlier step: Pyro steps
        # those with a zero one, see SVI.step).
        program.stepped = [i for i, leaf in enumerate(leaves) if _had_grad(leaf)]
        program.fused = self._plan(program, svi.optim)
        if program.fused:
            program.rates = self._rates(program, advance=False)
            program.rate_tensor = torch.tensor(program.rates, dtype=torch.float64)
            example = [*program.free, *data, *program.buffers(), program.rate_tensor]
            graph = _captured(_whole_step(program, grads_fn, len(data)), example)
        else:
            example = [*leaves, *data]
            graph = self._grads_only(_captured(grads_fn, example), program)
        _check_no_leaf_constants(graph, dict(zip(names, leaves, strict=True)))
        program.fn = self._compile(graph, example)
        program.compile_seconds = time.perf_counter() - start
        self.compile_seconds.append(program.compile_seconds)
        return program

    def _plan(self, program: _Program, optim: PyroOptim) -> bool:
        """Whether the optimizer's update goes into the program: every stepped leaf owned by a
        plain ``torch.optim.Adam`` or a ``ClippedAdam`` with state, no two sharing memory, and a
        ``PyroOptim`` whose call is the base class's (else the program gives gradients and the
        optimizer steps). The stepped leaves are grouped by optimizer kind, hyperparameters
        and dtype, each group moved into flat buffers."""
        if type(optim).__call__ is not PyroOptim.__call__:
            return False
        leaves = program.leaves
        groups: dict[tuple, list[int]] = {}
        for i in program.stepped:
            entry = optim._owner.get(leaves[i])
            if entry is None or not supported(entry[1]) or not entry[1].state.get(leaves[i]):
                return False
            groups.setdefault(FlatGroup.key(entry[1], leaves[i]), []).append(i)
        if not disjoint([leaves[i] for i in program.stepped]):
            return False
        clips = optim._clip_of
        for indices in groups.values():
            optimizers = [optim._owner[leaves[i]][1] for i in indices]
            group_leaves = [leaves[i] for i in indices]
            clip = [clips.get(leaf) for leaf in group_leaves]
            program.groups.append(FlatGroup(indices, group_leaves, optimizers, clip))
        program.stepped = [i for indices in groups.values() for i in indices]
        stepped = set(program.stepped)
        program.free = [leaf for i, leaf in enumerate(leaves) if i not in stepped]
        for i, leaf in enumerate(leaves):
            entry = optim._owner.get(leaf)
            if i not in stepped and entry is not None:
                program.skipped.append((entry[1], leaf))
        return self._state(program)

    @staticmethod
    def _grads_only(graph: torch.fx.GraphModule, program: _Program) -> torch.fx.GraphModule:
        """The capture's graph, its outputs cut to the loss and the stepped leaves' gradients:
        those the loss reaches, and those stepped before (zeros where the loss does not
        reach them)."""
        output = next(n for n in graph.graph.nodes if n.op == "output")
        outs = output.args[0]
        stepped = {i for i, out in enumerate(outs[1:]) if out is not None}
        program.stepped = sorted(stepped.union(program.stepped))
        new_outs = [outs[0]]
        with graph.graph.inserting_before(output):
            for i in program.stepped:
                out = outs[1 + i]
                if out is None:
                    placeholder = [n for n in graph.graph.nodes if n.op == "placeholder"][i]
                    out = graph.graph.call_function(
                        torch.ops.aten.zeros_like.default, (placeholder,)
                    )
                new_outs.append(out)
        output.args = (tuple(new_outs),)
        graph.graph.eliminate_dead_code()
        graph.recompile()
        return graph

    def _compile(self, graph: torch.fx.GraphModule, example: list[torch.Tensor]) -> Callable:
        """TorchInductor's program for ``graph``, compiled for the cold start.

        The program is C++ end to end (``cpp_wrapper``): its kernels and the code that calls
        them are one source file, built by one compiler run, and a step skips the Python
        wrapper's per-kernel calls. Building each kernel on its own costs a parse of the
        ATen headers per kernel (~2 s each here), or a precompiled header built first (~6 s
        on a machine's first compile): one source file costs one parse. Inductor's probe
        builds for the vector ISA are skipped too (the CPU's flags are trusted, with AVX2
        kernels on x86); if a build fails under that trust, the compile is tried again
        with Inductor's probes.
        """
        if self.backend == "aten":
            return graph
        with warnings.catch_warnings():
            # Importing TorchInductor touches torch.jit's deprecated decorators: not the user's.
            warnings.simplefilter("ignore", DeprecationWarning)
            from torch._guards import TracingContext, tracing
            from torch._inductor import config as inductor_config
            from torch._inductor import cpu_vec_isa
            from torch._inductor.compile_fx import compile_fx
            from torch._inductor.fx_passes import joint_graph
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        settings = {
            "cpp_wrapper": True,
            "cpp_cache_precompile_headers": False,
            "aot_inductor.enable_line_tables": False,  # -g1: ~0.8 s of a 5 s build
            # Inductor's FX pattern rewrites (attention, padded matmuls, ...): on the benchmark
            # models the steps ran faster without them (hier 0.078 -> 0.047 ms, vae 0.70 ->
            # 0.57), and building their tables is ~0.5 s of a cold compile (skipped below).
            "pattern_matcher": False,
        }

        def attempt(trusted: bool) -> Callable:
            # Fake inputs with a shape environment (all shapes static): TorchInductor's FX
            # graph cache keys a graph by them, so a second process finds its program on disk.
            fake_mode = FakeTensorMode(shape_env=ShapeEnv())
            fakes = [fake_mode.from_tensor(t, static_shapes=True) for t in example]
            patch: dict[str, Any] = dict(settings)
            avx2 = trusted and "avx2" in cpu_vec_isa.x86_isa_checker()
            if trusted:
                patch["cpp.vec_isa_ok"] = True
            if avx2:
                # The width is in the FX graph cache's key, which does not hold the ISA
                # itself: a program cached under another ISA is never loaded under this one.
                patch["cpp.simdlen"] = 256
            with torch.no_grad(), tracing(TracingContext(fake_mode)):
                with (
                    inductor_config.patch(patch),
                    _only_isa(cpu_vec_isa, avx2),
                    _without_pattern_tables(joint_graph),
                ):
                    return compile_fx(graph, fakes)

        rng = torch.get_rng_state()
        try:
            try:
                return attempt(trusted=True)
            except Exception:
                torch.set_rng_state(rng)
                return attempt(trusted=False)
        except Exception as e:
            raise CaptureError(
                f"TorchInductor could not compile the step: {type(e).__name__}: {e}"
            ) from e
        finally:
            torch.set_rng_state(rng)


@contextmanager
def _only_isa(cpu_vec_isa: Any, avx2: bool):
    """While compiling (with ``avx2``): Inductor's vector ISA is AVX2, taken without its probe
    builds (AVX-512's extension probes build two more test libraries). The list is forgotten
    afterwards, so the user's own compiles probe as usual."""
    own = cpu_vec_isa.valid_vec_isa_list
    if avx2:
        cpu_vec_isa.valid_vec_isa_list = lambda: [cpu_vec_isa.VecAVX2()]
    try:
        yield
    finally:
        cpu_vec_isa.valid_vec_isa_list = own
        own.cache_clear()


@contextmanager
def _without_pattern_tables(joint_graph: Any):
    """While compiling with ``pattern_matcher=False``: the joint-graph passes skip building the
    pattern tables they would not use (``lazy_init`` runs whatever the setting). Left unbuilt,
    they are built at the user's own first compile as usual."""
    own = joint_graph.lazy_init
    joint_graph.lazy_init = lambda *args, **kwargs: None
    try:
        yield
    finally:
        joint_graph.lazy_init = own
