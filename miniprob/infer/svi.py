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

from collections.abc import Callable
from typing import Any

import torch

from ..optim.optim import PyroOptim
from ..poutine.handlers import trace
from .elbo import ELBO


class SVI:
    """Fit the guide's parameters to the model by minimizing ``loss``.

    :param model: the model, a function with ``sample``/``param`` statements.
    :param guide: the variational distribution, the same kind of function.
    :param optim: a ``miniprob.optim`` optimizer (Pyro-style wrapper over ``torch.optim``).
    :param loss: an :class:`ELBO`, or any callable ``loss(model, guide, *args, **kwargs)``
        returning a differentiable tensor; keyword arguments of ``step`` reach it.
    """

    def __init__(self, model: Callable, guide: Callable, optim: PyroOptim, loss: ELBO | Callable, **kwargs: Any) -> None:
        if not isinstance(optim, PyroOptim):
            raise TypeError(
                f"optim must be a miniprob.optim optimizer (e.g. Adam({{'lr': 1e-3}})), got "
                f"{type(optim).__name__}"
            )
        if not callable(loss) and not isinstance(loss, ELBO):
            raise TypeError(f"loss must be an ELBO or a callable, got {type(loss).__name__}")
        self.model = model
        self.guide = guide
        self.optim = optim
        if isinstance(loss, ELBO):
            self.loss = loss.loss
            self.loss_and_grads = loss.loss_and_grads
        else:
            self.loss = loss
            self.loss_and_grads = self._callable_loss_and_grads

    def _callable_loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        loss = self.loss(model, guide, *args, **kwargs)
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
        return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)

    def step(self, *args: Any, **kwargs: Any) -> float:
        """Take one gradient step on the loss; returns the loss as a float."""
        with trace(param_only=True) as param_capture:
            loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        self.optim(params)
        for p in params:
            p.grad = None
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
