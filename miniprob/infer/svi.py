"""``SVI``: stochastic variational inference, one optimizer step per ``step`` call.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob.infer import SVI, Trace_ELBO
    >>> from miniprob.optim import Adam
    >>> pyro.set_rng_seed(0)
    >>> data = torch.tensor([1.0, 2.0, 3.0])
    >>> def model(data):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with pyro.plate("data", len(data)):
    ...         pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)
    >>> def guide(data):
    ...     pyro.sample("mu", dist.Normal(pyro.param("m", torch.tensor(0.0)), 0.5))
    >>> svi = SVI(model, guide, Adam({"lr": 0.05}), loss=Trace_ELBO())
    >>> history = svi.run(400, data, progress=False)
    >>> abs(pyro.param("m").item() - 2.0) < 0.3
    True
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..optim.optim import PyroOptim
from ..params import _CREATED
from ..runtime import Message, Messenger
from ..validation import check_program
from .diagnostics import check_loss
from .elbo import ELBO


class SVI:
    """Fit the guide's parameters to the model by minimizing ``loss``.

    :param model: the model, a function with ``sample``/``param`` statements.
    :param guide: the variational distribution, the same kind of function.
    :param optim: a ``miniprob.optim`` optimizer (Pyro-style wrapper over ``torch.optim``).
    :param loss: an :class:`ELBO`, or any callable ``loss(model, guide, *args, **kwargs)``
        returning a differentiable tensor; keyword arguments of ``step`` reach it.
    :param loss_and_grads: with a callable ``loss``, an optional callable with the same
        arguments that computes the loss, puts its gradients on the parameters and returns it
        (by default ``loss(...).backward()``).
    :param compile: ``True`` (or ``"inductor"``) captures each step signature's whole step -
        guide, model, loss, gradients, clipping, the optimizer's update - as one TorchInductor
        program after its first (eager) step, and replays it; ``"aten"`` replays the captured
        graph without compiling it. A step that cannot be captured (Python control flow on
        tensor values) runs eagerly, with a warning. Draws follow TorchInductor's generator:
        reproducible under one seed, not the eager draws. See :mod:`miniprob.infer.compiled`.
    :param num_samples: Pyro's deprecated ``TracePosterior`` setting, accepted so that Pyro
        code runs; it has no effect on ``step`` (in Pyro either) and warns as in Pyro.
    :param num_steps: Pyro's deprecated ``run()`` step count; accepted and ignored likewise
        (miniprob's ``run`` takes the step count as its first argument).
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim: PyroOptim,
        loss: ELBO | Callable,
        loss_and_grads: Callable | None = None,
        compile: bool | str = False,
        *,
        num_samples: int = 0,
        num_steps: int = 0,
    ) -> None:
        for arg, value in (("num_samples", num_samples), ("num_steps", num_steps)):
            if value:
                warnings.warn(
                    f"The `{arg}` argument to SVI is deprecated in Pyro and has no effect "
                    "in miniprob; give step counts to SVI.run or loop over SVI.step",
                    FutureWarning,
                    stacklevel=2,
                )
        if not isinstance(optim, PyroOptim):
            raise TypeError(
                f"optim must be a miniprob.optim optimizer (e.g. Adam({{'lr': 1e-3}})), got "
                f"{type(optim).__name__}"
            )
        check_program(model, "model", "SVI")
        check_program(guide, "guide", "SVI")
        if not callable(loss) and not isinstance(loss, ELBO):
            raise TypeError(f"loss must be an ELBO or a callable, got {type(loss).__name__}")
        self.model = model
        self.guide = guide
        self.optim = optim
        self._first_step = True
        self._last_read: dict[str, torch.Tensor] = {}
        self._elbo = loss if isinstance(loss, ELBO) else None
        if isinstance(loss, ELBO):
            if loss_and_grads is not None:
                raise ValueError("SVI: loss_and_grads= goes with a callable loss, not an ELBO")
            self.loss = loss.loss
            self.loss_and_grads = loss.loss_and_grads
        else:
            self.loss = loss
            self.loss_and_grads = loss_and_grads or self._callable_loss_and_grads
        if compile is True:
            compile = "inductor"
        self._compiled = None
        if compile:
            if loss_and_grads is not None:
                raise ValueError("SVI: compile= computes the gradients itself; drop loss_and_grads")
            from .compiled import CompiledStep

            self._compiled = CompiledStep(self, backend=compile)
            # The instance's step: the class's (eager) step stays as it is, with no test of
            # its own on its hot path.
            self.step = self._compiled_step

    def _compiled_step(self, *args: Any, **kwargs: Any) -> float:
        return self._compiled.step(args, kwargs)

    def _eager_step(self, args: tuple, kwargs: dict) -> float:
        return SVI.step(self, *args, **kwargs)

    def _callable_loss_and_grads(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> float:
        loss = self.loss(model, guide, *args, **kwargs)
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        check_loss(value)
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
        return value

    def step(self, *args: Any, **kwargs: Any) -> float:
        """Take one gradient step on the loss; returns the loss as a float.

        A step that raises (in the model, the guide, the loss or the optimizer) is undone: the
        parameters it created leave the store and no gradient stays on a parameter (an
        optimizer whose own update raised may have changed parameters before the error). The
        first step warns when the store already held parameters that the model or guide reads
        (their old values are where this run starts).
        """
        # The parameters this step creates, in this thread or task only (another thread may add
        # its own to a shared store meanwhile).
        created: list = []
        created_token = _CREATED.set(created)
        capture = _ParamCapture()
        # Python's cyclic garbage collector waits until the step is over. A step allocates a
        # few dicts per site that all live until its end; collections in the middle of it
        # would walk them, promote them, and soon walk every object of the process (torch's
        # included), only to find them freed by reference counting when the step returns.
        # With a thousand sites that was 15% of the step.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        sync = self.optim._param_sync
        try:
            if sync is None:
                with capture:
                    loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
            else:
                with sync, capture:
                    loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
            # The unconstrained leaves behind the values read, each once, in order of reading.
            params = list(dict.fromkeys(v.unconstrained() for v in capture.params.values()))
            if self._first_step:
                self._first_step = False
                _warn_preexisting(created, capture.params, self.optim)
            for p in params:
                # Pyro zeroes gradients after a step instead of removing them, so a parameter
                # that had a gradient once is stepped with a zero one when it is read but does
                # not reach the loss (Adam's momentum moves it on). The same, without keeping
                # zero tensors (and an extra add per parameter in every backward pass).
                if p.grad is None and getattr(p, "_miniprob_had_grad", False):
                    p.grad = torch.zeros_like(p)
            self.optim(params)
        except BaseException as error:
            _undo_step(created, capture.params, self.optim)
            self.optim._step_failed(error)
            raise
        finally:
            _CREATED.reset(created_token)
            if gc_was_enabled:
                gc.enable()
        for p in params:
            if p.grad is not None:
                if not getattr(p, "_miniprob_had_grad", False):
                    p._miniprob_had_grad = True
                p.grad = None
        self._last_read = capture.params
        return loss

    def evaluate_loss(self, *args: Any, **kwargs: Any) -> float:
        """The loss, computed without gradients."""
        with torch.no_grad():
            return float(self.loss(self.model, self.guide, *args, **kwargs))

    def run(self, num_steps: int, *args: Any, progress: bool = True, **kwargs: Any) -> list[float]:
        """Call :meth:`step` ``num_steps`` times; returns the loss history.

        With ``progress=True`` a ``tqdm`` bar shows the running (smoothed) loss.
        """
        history: list[float] = []
        steps = range(num_steps)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(steps, desc="SVI", unit="step")
            steps = bar
        running = None
        for i in steps:
            loss = self.step(*args, **kwargs)
            history.append(loss)
            if bar is not None:
                running = loss if running is None else 0.9 * running + 0.1 * loss
                if i % 10 == 0 or i == num_steps - 1:
                    bar.set_postfix(loss=f"{running:.4g}", refresh=False)
        if bar is not None:
            bar.close()
        return history


class _ParamCapture(Messenger):
    """Record the value of every param site read inside, by name (later reads win).

    What ``trace(param_only=True)`` would give SVI, without copying each site into a Trace.
    """

    def __init__(self) -> None:
        super().__init__()
        self.params: dict[str, torch.Tensor] = {}

    def postprocess_message(self, msg: Message) -> None:
        if msg["type"] == "param":
            self.params[msg["name"]] = msg["value"]


def _warn_preexisting(created: list, params: dict[str, torch.Tensor], optim: PyroOptim) -> None:
    """Warn once about parameters the first step read that it did not create (parameters
    whose optimizer state was restored, as when resuming, are expected)."""
    new = {name for _, name, _ in created}
    pending = getattr(optim, "_pending", {})
    reused = [name for name in params if name not in new and name not in pending]
    if reused:
        warnings.warn(
            f"SVI: the param store already held {reused} before the first step; training "
            "continues from those values (call pyro.clear_param_store() first for a fresh start)",
            stacklevel=3,
        )


def _undo_step(created: list, params: dict[str, torch.Tensor], optim: PyroOptim) -> None:
    """After a failed step: drop the gradients it left and the parameters it created (those
    still holding the leaf it created: a name set anew since is someone else's)."""
    for value in params.values():
        handle = getattr(value, "unconstrained", None)
        leaf = handle() if handle is not None else None
        if leaf is not None:
            leaf.grad = None
    for store, name, leaf in created:
        leaf.grad = None
        optim._forget(leaf)
        if name in store and store.unconstrained(name) is leaf:
            del store[name]
