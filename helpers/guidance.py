"""Guidance as wrappers around a velocity: each returns a new velocity ``v(x, t, labels)`` for `helpers.samplers`.

Classifier-free guidance (Ho and Salimans 2022), with the null label c = num_classes the model was trained with:

    v_hat = v(x, t, null) + gamma (v(x, t, c) - v(x, t, null))

gamma = 1 is plain conditioning, gamma = 0 the unconditional model, gamma > 1 extrapolates towards the class.

Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"), which needs no labels:

    v_hat = v_guide(x, t, c) + w (v(x, t, c) - v_guide(x, t, c))

where the guide is a weaker model of the same data (here an early snapshot of the same run). Where the two
disagree, the weak model's errors are the likely ones, and w > 1 steps away from them; w = 1 is the model alone.

Taught in notebook 03 (classifier-free guidance) and notebook 02, section 6 (autoguidance).
"""
import torch

from helpers.foundation import validate

CFG_SCALE = 5.0  # gamma of the course's MNIST grids (DeepFloyd's is 7)


def classifier_free(model, gamma: float = CFG_SCALE):
    """The classifier-free guided velocity of a class-conditioned `model` (one batched call for both terms)."""
    gamma = validate.finite_number(gamma, "the guidance scale gamma")
    null_label = model.config.get("num_classes", 0)
    if not null_label:
        raise ValueError(f"classifier-free guidance needs a class-conditioned model; this {model.config['name']} "
                         "is time-only (use autoguidance, or no guidance).")

    def velocity(x, t, labels):
        if labels is None:
            raise ValueError("classifier-free guidance needs the labels to sample: pass one label per image.")
        labels = torch.as_tensor(labels, device=x.device).reshape(-1)
        labels = labels.expand(x.shape[0]) if labels.numel() == 1 else labels
        null = torch.full_like(labels, null_label)
        if gamma == 1.0:  # plain conditioning: one evaluation
            return model(x, t, labels)
        if gamma == 0.0:  # the unconditional model: one evaluation
            return model(x, t, null)
        # Exercise 3.2 hint: evaluate the model with the labels and with the null labels (one batched call is fastest), then extrapolate from the unconditional velocity by gamma.
        ### BEGIN SOLUTION
        conditional, unconditional = model(torch.cat([x, x]), t, torch.cat([labels, null])).chunk(2)
        return unconditional + gamma * (conditional - unconditional)
        ### END SOLUTION
    return velocity


def autoguided(model, guide, w: float):
    """The velocity of `model` autoguided by the weaker `guide` with weight `w` (labels, if any, go to both)."""
    w = validate.finite_number(w, "the autoguidance weight w")
    if guide.config != model.config:
        raise ValueError("the guide must be the same architecture as the model (an earlier snapshot of its run); "
                         f"got {guide.config} for a model {model.config}.")

    def velocity(x, t, labels=None):
        strong = model(x, t, labels)
        if w == 1.0:  # the model alone: one evaluation
            return strong
        weak = guide(x, t, labels)
        return weak + w * (strong - weak)
    return velocity
