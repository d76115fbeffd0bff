"""Handlers that rewrite what a site is: ``lift`` (a param becomes a sample), ``do`` (an
intervention), ``uncondition`` (an observation becomes a draw), ``infer_config`` (a site's
``infer`` dict from a function) and ``equalize`` (several sites share one value).

Each changes the message it sees in ``process_message`` and lets the stack do the rest, as
Pyro's handlers of the same names do; the numbers under one seed are Pyro's.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> def model():
    ...     return pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(3.0))
    >>> poutine.trace(poutine.uncondition(model)).get_trace().nodes["x"]["is_observed"]
    False
"""

from __future__ import annotations

import numbers
import re
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.distributions import Distribution

from ..distributions.delta import Delta
from ..params import MODULE_SEPARATOR
from ..runtime import Message, Messenger, apply_stack
from ..validation import is_validation_enabled


class lift(Messenger):
    """Turn ``param`` statements into ``sample`` statements drawn from ``prior``.

    ``prior`` is a distribution (every param is lifted), a dict from param names to
    distributions or stochastic functions (the params it names), or a stochastic function
    (called with the param's other arguments). A param read twice in one run is sampled once.

    :param fn: the stochastic function whose params are lifted.
    :param prior: the distribution(s) the lifted params are drawn from.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> def model():
        ...     s = pyro.param("s", torch.tensor(0.5))
        ...     return pyro.sample("z", dist.Normal(0.0, s))
        >>> lifted = poutine.lift(model, prior={"s": dist.Exponential(0.3)})
        >>> poutine.trace(lifted).get_trace().nodes["s"]["type"]
        'sample'
    """

    def __init__(self, fn: Callable | None = None, prior: Any = None) -> None:
        if isinstance(fn, dict):
            fn, prior = None, fn
        super().__init__(fn)
        if not (isinstance(prior, dict) or callable(prior)):
            raise TypeError(
                "lift: 'prior' should be a distribution, a stochastic function or a dict of "
                f"them, got {type(prior).__name__}: {prior!r}"
            )
        self.prior = prior
        self._samples: dict[str, Message] = {}
        self._hits: set[str] = set()
        self._misses: set[str] = set()

    def __enter__(self) -> lift:
        self._samples, self._hits, self._misses = {}, set(), set()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._samples = {}
        if is_validation_enabled() and isinstance(self.prior, dict):
            extra = set(self.prior) - self._hits
            if extra:
                warnings.warn(
                    "pyro.module prior did not find params ['{}']. "
                    "Did you instead mean one of ['{}']?".format(
                        "', '".join(extra), "', '".join(self._misses)
                    ),
                    stacklevel=2,
                )
        super().__exit__(*exc)

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "param":
            return
        name = msg["name"]
        prior = self.prior
        if isinstance(prior, dict):
            # a module's parameter ('net$$$weight') by its own name, as in Pyro
            param_name = name.split(MODULE_SEPARATOR)[1] if MODULE_SEPARATOR in name else name
            if param_name not in prior:
                self._misses.add(param_name)
                return
            self._hits.add(param_name)
            prior = prior[param_name]
            msg["args"] = msg["args"][1:]
            if isinstance(prior, Distribution):
                msg["args"], msg["kwargs"], msg["infer"] = (), {}, {}
        elif isinstance(prior, Distribution):
            msg["args"], msg["kwargs"], msg["infer"] = (), {}, {}
        else:  # a stochastic function: the handlers outside see its own sites, not this one
            msg["stop"] = True
            msg["args"] = msg["args"][1:]
        msg["fn"] = prior
        msg["type"] = "sample"
        first = self._samples.get(name)
        if first is None:
            self._samples[name] = msg
            msg["is_observed"] = False
        else:  # read again in the same run: the value drawn first, observed
            msg["value"] = first["value"]
            msg["is_observed"] = True
            msg["stop"] = True


class do(Messenger):
    """Intervene: the sites named in ``data`` return the given values, as if hard-coded.

    A fresh sample site of the same name is still drawn (its value is not used downstream);
    the intervened site itself is renamed ``name + "__CF"`` and hidden from the handlers
    outside. With ``condition`` it expresses counterfactuals (single world intervention graphs).
    Two ``do`` on one site warn, as in Pyro, and the inner value wins (Pyro recurses without
    end there: a message remembers every ``do`` that saw it, not only the last).

    :param fn: the stochastic function.
    :param data: site names to values (tensors or numbers).

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> def model():
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     return z * 2
        >>> poutine.do(model, data={"z": torch.tensor(1.5)})().item()
        3.0
    """

    def __init__(self, fn: Callable | None = None, data: dict | None = None) -> None:
        if isinstance(fn, dict):
            fn, data = None, fn
        super().__init__(fn)
        if not isinstance(data, dict):
            raise TypeError(
                f"do: 'data' should be a dict of site names to values, got {type(data).__name__}"
            )
        self.data = data
        self._intervener_id = str(id(self))

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample":
            return
        name = msg["name"]
        intervention = self.data.get(name)
        interveners = msg.get("_interveners", ())
        if intervention is None or self._intervener_id in interveners:
            return
        if interveners:
            warnings.warn(
                f"Attempting to intervene on variable {name} multiple times,"
                "this is almost certainly incorrect behavior",
                RuntimeWarning,
                stacklevel=2,
            )
        if isinstance(intervention, numbers.Number):
            intervention = torch.tensor(intervention)
        elif not isinstance(intervention, torch.Tensor):
            raise NotImplementedError(
                f"Interventions of type {type(intervention)} not implemented (yet) "
                f"(site '{name}': give a tensor or a number)"
            )
        msg["_interveners"] = interveners + (self._intervener_id,)
        fresh = msg.copy()
        fresh["cond_indep_stack"] = ()  # the plates inside add their frames again
        apply_stack(fresh)
        msg["name"] = name + "__CF"
        msg["value"] = intervention
        msg["is_observed"] = True
        msg["stop"] = True


class uncondition(Messenger):
    """Draw the observed sites from their distributions, ignoring the observations.

    The observed value is kept in the site's ``infer`` dict as ``"obs"``, with
    ``"was_observed": True``.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> def model():
        ...     return pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(3.0))
        >>> site = poutine.trace(poutine.uncondition(model)).get_trace().nodes["x"]
        >>> site["infer"]["was_observed"], site["infer"]["obs"].item()
        (True, 3.0)
    """

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and msg["is_observed"]:
            msg["is_observed"] = False
            msg["infer"]["was_observed"] = True
            msg["infer"]["obs"] = msg["value"]
            msg["value"] = None
            msg["done"] = False


class infer_config(Messenger):
    """Update each sample and param site's ``infer`` dict with ``config_fn(site)``.

    :param fn: the stochastic function.
    :param config_fn: a function from a site (message) to a dict of ``infer`` entries.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> def model():
        ...     return pyro.sample("x", dist.Bernoulli(0.5))
        >>> config = lambda site: {"enumerate": "parallel"}
        >>> poutine.trace(poutine.infer_config(model, config)).get_trace().nodes["x"]["infer"]
        {'enumerate': 'parallel'}
    """

    def __init__(
        self, fn: Callable | None = None, config_fn: Callable[[Message], dict] | None = None
    ) -> None:
        super().__init__(fn)
        if not callable(config_fn):
            raise TypeError(
                "infer_config: 'config_fn' should be a function from a site to a dict, "
                f"got {type(config_fn).__name__}"
            )
        self.config_fn = config_fn

    def process_message(self, msg: Message) -> None:
        if msg["type"] in ("sample", "param"):
            msg["infer"].update(self.config_fn(msg))


class equalize(Messenger):
    """Give every site matching ``sites`` the value of the first one that ran.

    ``sites`` is a name or a list of names, each a regular expression matched against whole
    site names, of sites of ``type`` (``"sample"`` or ``"param"``). The later sample sites become
    deterministic (a masked ``Delta``), unless ``keep_dist=True``: then they keep their
    distributions and are observed at the shared value, which conditions the model on the
    sites being equal.

    :param fn: the stochastic function.
    :param sites: the names (regular expressions) of the sites to equalize.
    :param type: the site type, ``"sample"`` (default) or ``"param"``.
    :param keep_dist: keep the later sites' distributions (observing them).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> def model():
        ...     return [pyro.sample(n, dist.Normal(0.0, 1.0)) for n in ("a_std", "b_std")]
        >>> a, b = poutine.equalize(model, ".+_std")()
        >>> bool(a == b)
        True
    """

    def __init__(
        self,
        fn: Callable | None = None,
        sites: str | list[str] | None = None,
        type: str = "sample",
        keep_dist: bool = False,
    ) -> None:
        if isinstance(fn, (str, list)):
            fn, sites = None, fn
        super().__init__(fn)
        names = [sites] if isinstance(sites, str) else sites
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"equalize: 'sites' should be a name or a list of names, got {sites!r}")
        self.sites = names
        self._patterns = [re.compile(name) for name in names]
        self.type = type
        self.keep_dist = keep_dist
        self.value: torch.Tensor | None = None

    def __enter__(self) -> equalize:
        self.value = None
        return super().__enter__()

    def _is_matching(self, msg: Message) -> bool:
        return msg["type"] == self.type and any(
            p.fullmatch(msg["name"]) is not None for p in self._patterns
        )

    def process_message(self, msg: Message) -> None:
        if self.value is None or not self._is_matching(msg):
            return
        msg["value"] = self.value
        if msg["type"] == "sample":
            msg["is_observed"] = True
            if not self.keep_dist:
                event_dim = len(msg["fn"].event_shape)
                msg["infer"] = {"_deterministic": True}
                msg["fn"] = Delta(self.value, event_dim=event_dim).mask(False)

    def postprocess_message(self, msg: Message) -> None:
        if self.value is None and self._is_matching(msg):
            self.value = msg["value"]
