"""Custom loss callables shared by the tests, written once for either library."""


def annealed_elbo(lib):
    """The tutorial's KL-annealing loss: ``annealing_factor`` scales the named latents' terms."""

    def loss(model, guide, *args, annealing_factor=1.0, latents_to_anneal=(), **kwargs):
        guide_trace = lib.poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = lib.poutine.trace(lib.poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        elbo = 0.0
        for tr, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            for site in tr.nodes.values():
                if site["type"] == "sample":
                    factor = annealing_factor if site["name"] in latents_to_anneal else 1.0
                    elbo = elbo + sign * factor * site["fn"].log_prob(site["value"]).sum()
        return -elbo

    return loss
