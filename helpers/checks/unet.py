"""Checks of the course UNet (exercises 1.2, 1.3, 2.1, 3.1), by shapes, statistics and which inputs reach the
output: perturbing an input or a sub-network must (or must not) change what comes out."""
import torch
from torch import nn

from helpers.checks.core import close, fail, first_line, grades

GELU_MIN = -0.1700  # min_x x * Phi(x)


@grades("1.2")
def unet_operations(module):
    """conv / down_conv / up_conv(c_in, c_out): resolution kept / halved / doubled, then BatchNorm, then GELU."""
    x = torch.randn(16, 3, 8, 8)
    for name, size in (("conv", 8), ("down_conv", 4), ("up_conv", 16)):
        block = getattr(module, name)(3, 5)
        if not isinstance(block, nn.Module):
            fail(f"{name}(c_in, c_out) must return an nn.Module (e.g. an nn.Sequential)")
        block.train()
        y = block(x)
        if y.shape != (16, 5, size, size):
            fail(f"{name}(3, 5) maps [16, 3, 8, 8] to {list(y.shape)}, not [16, 5, {size}, {size}]: check its "
                 f"kernel size, stride and padding")
        if y.min() < GELU_MIN - 1e-3:
            fail(f"{name} outputs values below GELU's minimum -0.17: it must end with GELU, after BatchNorm")
        if y.min() >= 0:
            fail(f"{name} outputs no negative values: its activation must be GELU, not ReLU")
        big = block(100 * x)
        if not close(big.mean((0, 2, 3)), y.mean((0, 2, 3)), 0.05):
            fail(f"{name}'s output scale follows its input's: BatchNorm2d is missing between the convolution "
                 f"and the GELU")


@grades("1.3")
def course_unet(CourseUNet):
    """Flatten = GELU(mean over the s x s bottleneck) to 1 x 1, Unflatten back to s x s, every skip concatenated."""
    model = CourseUNet(in_channels=1, hidden=4, image_size=12).eval()
    h = torch.randn(2, 8, 3, 3)
    flat = model.flatten(h)
    if flat.shape != (2, 8, 1, 1):
        fail(f"Flatten maps the [2, 8, 3, 3] bottleneck to {list(flat.shape)}, not [2, 8, 1, 1]")
    if not close(flat, nn.functional.gelu(h.mean((2, 3), keepdim=True))):
        fail("Flatten must average the bottleneck over its s x s pixels, then apply GELU")
    if model.unflatten(flat).shape != (2, 8, 3, 3):
        fail(f"Unflatten maps [2, 8, 1, 1] to {list(model.unflatten(flat).shape)}, not back to [2, 8, 3, 3]")
    x = torch.randn(2, 1, 12, 12)
    try:
        with torch.no_grad():
            out = model(x)
            skips, bottleneck = model.encode(x)
            base = model.decode(skips, bottleneck)
    except RuntimeError as error:
        fail(f"the forward pass fails ({first_line(error)}): each UpBlock's input is the upsampled "
             f"tensor concatenated (dim=1) with the skip of the same resolution")
    if out.shape != x.shape:
        fail(f"the UNet maps {list(x.shape)} to {list(out.shape)}")
    for i, name in enumerate(("first (full-resolution)", "second", "third (lowest-resolution)")):
        changed = list(skips)
        changed[i] = changed[i] + 1.0
        with torch.no_grad():
            if close(model.decode(tuple(changed), bottleneck), base):
                fail(f"the {name} skip connection does not reach the output: concatenate it in decode")


def _conditional(cls, num_classes):
    torch.manual_seed(0)
    return cls(in_channels=1, hidden=4, image_size=12, num_classes=num_classes).eval()


def _reaches_output(model, sub: nn.Module, run) -> bool:
    """Does nudging `sub`'s last bias change run(model) at all? (Exact comparison: the same computation on the
    same input is bit-identical, and a freshly initialised model's response to the nudge can be small.)"""
    with torch.no_grad():
        before = run(model)
        last = [m for m in sub.modules() if isinstance(m, nn.Linear)][-1]
        last.bias += 5.0
        after = run(model)
        last.bias -= 5.0
    return not torch.equal(before, after)


@grades("2.1")
def time_conditioning(ConditionalCourseUNet):
    """One time per sample, t of shape [B] or a single t; both FCBlocks (fc1_t, fc2_t) reach the output."""
    model = _conditional(ConditionalCourseUNet, 0)
    x, t = torch.randn(3, 1, 12, 12), torch.tensor([0.1, 0.5, 0.9])
    try:
        with torch.no_grad():
            for fc in (model.fc1_t, model.fc2_t):  # a fresh model barely responds to t: amplify its embeddings
                for layer in fc.modules():
                    if isinstance(layer, nn.Linear):
                        layer.weight.mul_(10.0)
            out = model(x, t)
    except RuntimeError as error:
        fail(f"the forward pass fails on t of shape [3] ({first_line(error)}): make t a [B, 1] column for "
             f"fc1_t / fc2_t, and their outputs [B, channels, 1, 1]")
    with torch.no_grad():
        if out.shape != x.shape:
            fail(f"the model maps {list(x.shape)} to {list(out.shape)}")
        if torch.equal(model(x, t + 0.3), out):
            fail("the output does not change with t: the time embedding never reaches the decoder")
        if not close(model(x[1:2], t[1:2]), out[1:2]):
            fail("sample i must be conditioned on its own time t[i], whatever the rest of the batch")
        if not close(model(x, torch.tensor(0.5)), model(x, torch.full((3,), 0.5))):
            fail("a single time (a 0-d tensor) must condition every sample of the batch")
    for name in ("fc1_t", "fc2_t"):
        if not _reaches_output(model, getattr(model, name), lambda m: m(x, t)):
            fail(f"{name}'s embedding does not reach the output: both FCBlocks of t modulate the decoder")


@grades("3.1")
def class_conditioning(ConditionalCourseUNet):
    """One-hot labels through fc1_c and fc2_c; the null label num_classes is the all-zero vector."""
    model = _conditional(ConditionalCourseUNet, 10)
    x, t = torch.randn(3, 1, 12, 12), torch.full((3,), 0.5)
    labels = torch.tensor([3, 7, 10])
    try:
        with torch.no_grad():
            out = model(x, t, labels)
    except (RuntimeError, IndexError) as error:
        fail(f"the forward pass fails on labels [3, 7, 10] ({first_line(error)}): the null label 10 "
             f"needs a one-hot vector too (all zeros)")
    with torch.no_grad():
        if torch.equal(model(x, t, torch.full((3,), 3)), model(x, t, torch.full((3,), 7))):
            fail("the output does not change with the label: the class embedding never reaches the decoder")
        if not close(model(x[:1], t[:1], labels[:1]), out[:1]):
            fail("sample i must be conditioned on its own label labels[i]")
    for name in ("fc1_c", "fc2_c"):
        if not _reaches_output(model, getattr(model, name), lambda m: m(x, t, labels)):
            fail(f"{name}'s embedding does not reach the output: both FCBlocks of the class modulate the decoder")
    null = torch.full((3,), 10)
    with torch.no_grad():
        before = model(x, t, null)
        model.fc1_c[0].weight.add_(1.0)
        model.fc2_c[0].weight.add_(1.0)
        moved = not torch.equal(model(x, t, null), before)
    if moved:
        fail("the null label (num_classes) must be the all-zero one-hot vector, so it does not depend on the "
             "FCBlocks' input weights")
