"""Effect handlers: each a small class usable as ``h(fn, ...)``, ``@h(...)`` and ``with h(...)``.

A handler sees every ``sample``/``param`` message inside it (see :mod:`miniprob.runtime`).
Where a handler's first argument is not callable, it is taken as the handler's own argument, so
``scale(0.5)`` and ``scale(scale=0.5)`` mean the same.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..runtime import Message, Messenger
from ..util import check_rng_seed, get_rng_state, set_rng_seed, set_rng_state
from ..validation import as_observation, check_names, is_validation_enabled
from .plate import _Subsample
from .trace_struct import Trace
from .util import site_is_subsample


def identify_dense_edges(trace: Trace) -> None:
    """Add Pyro's dense edges to ``trace``, in place: from each sample site to each later one,
    unless the two sit in different iterations of one sequential plate (subsample sites left out).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     a = pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     for i in pyro.plate("seq", 2):
        ...         pyro.sample(f"b{i}", dist.Normal(a, 1.0))
        >>> sorted(trace(model, graph_type="dense").get_trace().edges)
        [('a', 'b0'), ('a', 'b1')]
    """
    earlier: list[tuple[str, tuple]] = []
    for name, site in trace.nodes.items():
        if site.get("type") != "sample" or site_is_subsample(site):
            continue
        stack = site["cond_indep_stack"]
        for past_name, past_stack in earlier:
            # Independent when, frame by frame from the outermost, the two stacks hold one
            # sequential plate in different iterations (counters), as in Pyro.
            pairs = zip(stack, past_stack, strict=False)
            if not any(f.name == g.name and f.counter != g.counter for f, g in pairs):
                trace.add_edge(past_name, name)
        earlier.append((name, stack))


class trace(Messenger):
    """Record every sample and param site into a :class:`Trace` (``param_only=True``: param
    sites only; ``graph_type="dense"``: with Pyro's dense edges, added on exit, see
    :func:`identify_dense_edges`).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     return pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> tr = trace(model).get_trace()
        >>> tr.nodes["x"]["type"]
        'sample'
    """

    def __init__(
        self, fn: Callable | None = None, graph_type: str = "flat", param_only: bool = False
    ):
        super().__init__(fn)
        self.graph_type = graph_type
        self.param_only = param_only
        self.trace = Trace(graph_type)
        # The handlers this one is a copy of (see ``_wrap``): each shows the trace it records.
        self._shown_on: tuple[trace, ...] = ()

    def __enter__(self) -> trace:
        self.trace = Trace(self.graph_type)
        for tracer in self._shown_on:
            tracer.trace = self.trace
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.graph_type == "dense":
            identify_dense_edges(self.trace)
        super().__exit__(*exc)

    def _wrap(self, fn: Callable) -> trace:
        # ``tracer = trace(); model = tracer(model)``: the copy records, and ``tracer.trace``
        # must show what it recorded, as in Pyro (the copy lets one tracer wrap several functions).
        wrapped = super()._wrap(fn)
        wrapped._shown_on = self._shown_on + (self,)
        return wrapped

    def postprocess_message(self, msg: Message) -> None:
        kind = msg["type"]
        if kind != "param" and (self.param_only or kind != "sample"):
            return  # other effects (a scope, a subsample) are no sites
        # A copy: the trace's site must not change when another handler changes the message.
        self.trace.add_site(msg["name"], msg.copy())

    def _reset(self) -> None:
        # A run restarted (see ``NonlocalExit.reset_stack``): forget its sites but the inputs.
        fresh = Trace(self.graph_type)
        if "_INPUT" in self.trace.nodes:
            fresh.add_site("_INPUT", self.trace.nodes["_INPUT"])
        self.trace = fresh
        for tracer in self._shown_on:
            tracer.trace = fresh

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            return super().__call__(*args, **kwargs)
        with self:
            if self.param_only:  # param sites only, as in Pyro: no input and return nodes
                return self.fn(*args, **kwargs)
            inputs = {"name": "_INPUT", "type": "args", "args": args, "kwargs": kwargs}
            self.trace.add_site("_INPUT", inputs)
            try:
                ret = self.fn(*args, **kwargs)
            except (ValueError, RuntimeError) as e:
                # Pyro puts the shape table of the sites so far into the message; a note shows
                # it under the traceback and leaves the message (and the exception) as it was.
                e.add_note(self.trace.format_shapes())
                raise
            self.trace.add_site("_RETURN", {"name": "_RETURN", "type": "return", "value": ret})
        return ret

    def get_trace(self, *args: Any, **kwargs: Any) -> Trace:
        """Run the function and return its trace."""
        self(*args, **kwargs)
        return self.trace


class replay(Messenger):
    """Give sample sites the values recorded in ``trace`` (and params the values in ``params``).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     return pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> tr = trace(model).get_trace()
        >>> bool(replay(model, trace=tr)() == tr.nodes["x"]["value"])
        True
    """

    def __init__(
        self, fn: Callable | None = None, trace: Trace | None = None, params: dict | None = None
    ):
        super().__init__(fn)
        if trace is None and params is None:
            raise ValueError("replay needs a trace= or params= to replay")
        self.trace = trace
        self.params = params

    def process_message(self, msg: Message) -> None:
        name = msg["name"]
        if msg["type"] == "sample":
            if self.trace is None or msg["is_observed"]:
                return
            guide_site = self.trace.nodes.get(name)
            if guide_site is None:
                return
            if guide_site["type"] != "sample" or guide_site["is_observed"]:
                raise RuntimeError(
                    f"site '{name}' must be sampled (not observed) in the replayed trace"
                )
            fn = msg["fn"]
            replayed = guide_site.get("fn")  # a hand-built trace may record values alone
            if fn.__class__ is _Subsample is replayed.__class__ and replayed.size != fn.size:
                raise ValueError(
                    f"plate '{name}' has size {fn.size} here but size {replayed.size} "
                    "in the replayed trace (did the data size change since an autoguide took "
                    "its prototype? Build it anew, or give it create_plates)"
                )
            msg["done"] = True
            msg["value"] = guide_site["value"]
            msg["infer"] = guide_site["infer"]
        elif msg["type"] == "param" and self.params is not None and name in self.params:
            msg["done"] = True
            msg["value"] = self.params[name]


class BlockArgumentError(ValueError, AssertionError):
    """``block`` told to hide and expose one site: a ``ValueError``, and the
    ``AssertionError`` Pyro raises."""


class block(Messenger):
    """Hide sites from the handlers outside this one (all of them by default).

    ``hide``/``expose`` name sites; ``hide_types``/``expose_types`` name site types
    (``"sample"``, ``"observe"``, ``"param"``); ``hide_fn``/``expose_fn`` decide per message.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.Normal(0.0, 1.0))
        >>> list(trace(block(model, hide=["a"])).get_trace().stochastic_nodes)
        ['b']
    """

    def __init__(
        self,
        fn: Callable | None = None,
        hide_fn: Callable[[Message], bool] | None = None,
        expose_fn: Callable[[Message], bool] | None = None,
        hide_all: bool = True,
        expose_all: bool = False,
        hide: Iterable[str] | None = None,
        expose: Iterable[str] | None = None,
        hide_types: Iterable[str] | None = None,
        expose_types: Iterable[str] | None = None,
    ):
        super().__init__(fn)
        if hide_fn is not None and expose_fn is not None:
            raise ValueError("Only specify one of hide_fn or expose_fn (block: give one, not both)")
        if hide_fn is not None:
            self.hide_fn = hide_fn
            return
        if expose_fn is not None:
            self.hide_fn = lambda msg: not expose_fn(msg)
            return
        for arg, names in (
            ("hide", hide),
            ("expose", expose),
            ("hide_types", hide_types),
            ("expose_types", expose_types),
        ):
            check_names(names, f"block: {arg}")
        if expose_all:
            hide_all = False
        # A list given (even an empty one) decides hide_all, in this order, as in Pyro:
        # block(hide=[]) hides nothing.
        given = ((hide, False), (expose, True), (hide_types, False), (expose_types, True))
        for names, hides_the_rest in given:
            if names is not None:
                hide_all = hides_the_rest
        hide, expose = set(hide or ()), set(expose or ())
        hide_types, expose_types = set(hide_types or ()), set(expose_types or ())
        if hide & expose:
            raise BlockArgumentError(
                f"cannot hide and expose a site: block: sites {sorted(hide & expose)} are both "
                "hidden and exposed"
            )
        if hide_types & expose_types:
            raise BlockArgumentError(
                f"cannot hide and expose a site type: block: types "
                f"{sorted(hide_types & expose_types)} are both hidden and exposed"
            )
        self._rule = (hide, expose, hide_types, expose_types, hide_all)
        self.hide_fn = self._default_hide

    def _default_hide(self, msg: Message) -> bool:
        hide, expose, hide_types, expose_types, hide_all = self._rule
        kind = "observe" if msg["type"] == "sample" and msg["is_observed"] else msg["type"]
        if msg["name"] in hide or kind in hide_types:
            return True
        return hide_all and msg["name"] not in expose and kind not in expose_types

    def process_message(self, msg: Message) -> None:
        msg["stop"] = bool(self.hide_fn(msg))


class condition(Messenger):
    """Observe sample sites at the values in ``data`` (a dict or a :class:`Trace`).

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     return pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> condition(model, data={"x": torch.tensor(3.0)})().item()
        3.0
    """

    def __init__(self, fn: Callable | None = None, data: dict | Trace | None = None):
        if fn is not None and not callable(fn):
            fn, data = None, fn
        super().__init__(fn)
        if data is None:
            raise ValueError("condition needs data= (a dict of site values or a Trace)")
        self.data = data

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample":
            return
        name = msg["name"]
        if isinstance(self.data, Trace):
            site = self.data.nodes.get(name)
            if site is None:
                return
            value = site["value"]
        elif name in self.data:
            value = self.data[name]
        else:
            return
        if value is not None and not isinstance(value, torch.Tensor):
            value = as_observation(value, name)
        # The value is checked against the distribution when its log density is computed
        # (:meth:`Trace.compute_log_prob`), as in Pyro.
        msg["value"] = value
        msg["is_observed"] = value is not None


def _checked_scale(scale: Any) -> float | torch.Tensor:
    if isinstance(scale, torch.Tensor):
        if is_validation_enabled() and not bool(((scale > 0) & torch.isfinite(scale)).all()):
            raise ValueError(f"'scale' argument should be positive and finite, got {scale}")
        return scale
    if not (isinstance(scale, numbers.Real) and scale > 0 and math.isfinite(scale)):
        raise ValueError(
            f"'scale' argument should be a positive finite number or tensor, got {scale!r}"
        )
    # A NumPy scalar (accepted, as in Pyro) as the Python number it stands for: the same
    # arithmetic, and a scale of 1 stays recognisable as one (see ``scale_and_mask``).
    return int(scale) if isinstance(scale, numbers.Integral) else float(scale)


class scale(Messenger):
    """Multiply the log densities of the sites inside by ``scale`` (a positive number, NumPy
    scalars included, or tensor).

    Use it for KL annealing and beta-VAEs: the scale may change at every step.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> with trace() as tr, scale(scale=0.5):
        ...     _ = pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> tr.trace.nodes["x"]["scale"]
        0.5
    """

    def __init__(self, fn: Callable | None = None, scale: float | torch.Tensor = 1.0):
        if fn is not None and not callable(fn):
            fn, scale = None, fn
        super().__init__(fn)
        self.scale = _checked_scale(scale)

    def process_message(self, msg: Message) -> None:
        msg["scale"] = self.scale * msg["scale"]


class mask(Messenger):
    """Zero the log densities of the sites inside where ``mask`` (a bool or bool tensor) is False.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> with trace() as tr, mask(mask=torch.tensor([True, False])):
        ...     _ = pyro.sample("x", dist.Normal(torch.zeros(2), 1.0))
        >>> tr.trace.log_prob_sum().item() == dist.Normal(0.0, 1.0).log_prob(
        ...     tr.trace.nodes["x"]["value"][0]).item()
        True
    """

    def __init__(self, fn: Callable | None = None, mask: bool | torch.Tensor | None = None):
        if fn is not None and not callable(fn):
            fn, mask = None, fn
        super().__init__(fn)
        if not isinstance(mask, bool) and (
            not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool
        ):
            found = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(
                f"'mask' argument should be a bool or a torch.bool tensor, got {found}"
            )
        self.mask = mask

    def process_message(self, msg: Message) -> None:
        msg["mask"] = self.mask if msg["mask"] is None else msg["mask"] & self.mask


class seed(Messenger):
    """Seed every RNG on entry and restore the previous RNG states on exit.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> draw = lambda: pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> bool(seed(draw, rng_seed=1)() == seed(draw, rng_seed=1)())
        True
    """

    def __init__(self, fn: Callable | None = None, rng_seed: int | None = None):
        if fn is not None and not callable(fn):
            fn, rng_seed = None, fn
        super().__init__(fn)
        self.rng_seed = check_rng_seed(rng_seed, "seed")

    def __enter__(self) -> seed:
        self._old_state = get_rng_state()
        set_rng_seed(self.rng_seed)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        set_rng_state(self._old_state)
        super().__exit__(*exc)


class substitute(Messenger):
    """Give ``param`` sites the values in ``data`` (by name), as Pyro's ``substitute`` does
    (sample sites are left alone: ``condition`` observes them, ``replay`` reuses a trace's).

    With every parameter substituted, a model becomes a pure function of the given values.

    Example::

        >>> import torch, miniprob as pyro
        >>> f = lambda: pyro.param("w", torch.tensor(1.0))
        >>> substitute(f, data={"w": torch.tensor(5.0)})().item()
        5.0
    """

    def __init__(self, fn: Callable | None = None, data: dict | None = None):
        if fn is not None and not callable(fn):
            fn, data = None, fn
        super().__init__(fn)
        if data is None:
            raise ValueError("substitute needs data= (a dict of site values)")
        self.data = data

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "param":
            value = self.data.get(msg["name"])
            if value is not None:
                msg["value"] = value
                msg["done"] = True
