"""Checks of the course UNet (exercises 1.2, 1.3, 2.1, 3.1), by shapes, statistics, reach, and by rebuilding a
conditioned forward pass from the model's own parts (encode, the FCBlocks, decode).

Operating points: the course's sizes (28 x 28 MNIST, 7 x 7 bottleneck) and the homework's (32 x 32, 8 x 8), a
small 12 x 12 colour UNet, non-square inputs for the operations, batches of 2 to 16, times across (0, 1], the
time-only UNet in both modulations, the class-conditioned UNet with 10 and with 4 classes and the null label.

Only calls reach the student's modules (no hooks, no look at their types), so that the class grader can replay
them; a module's state_dict is read for BatchNorm's running statistics."""
import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks.core import close, fail, first_line, grades, shape_of, where

GELU_MIN = -0.1700  # min_x x * Phi(x)
SILU_MIN = -0.2785  # min_x x * sigmoid(x)


def _run(block, x, what: str):
    """block(x), or a sentence naming what failed on which input."""
    try:
        return block(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        fail(f"{what} fails on an input of shape {list(x.shape)} ({first_line(error)})")


def _ends_with_gelu(y: torch.Tensor, what: str) -> None:
    """y = GELU(BatchNorm(...)) in train mode: never below GELU's minimum, a third of it in [-0.17, -0.1)."""
    low = float(y.min())
    if low >= 0:
        fail(f"{what} outputs no negative values: its activation is ReLU (or another that is never negative), "
             f"not GELU")
    if low < GELU_MIN - 1e-3:
        per_channel = y.transpose(0, 1).flatten(1)
        if per_channel.mean(1).abs().max() < 0.05 and (per_channel.std(1) - 1).abs().max() < 0.05:
            fail(f"{what} ends with BatchNorm (its output has mean 0 and variance 1 per channel): GELU comes after "
                 f"BatchNorm, last")
        if low > SILU_MIN - 0.005 and float(((y < -0.2) & (y > SILU_MIN - 0.005)).float().mean()) > 0.1:
            fail(f"{what} outputs values down to {low:.3f}, SiLU's minimum: its activation must be GELU")
        fail(f"{what} outputs values down to {low:.2f}, below GELU's minimum -0.17: it must end with GELU")


def _gelu_shape(y: torch.Tensor, what: str) -> None:
    share = float(((y < -0.1) & (y >= GELU_MIN - 1e-3)).float().mean())
    if share < 0.15:
        fail(f"only {share:.0%} of {what}'s outputs lie in [-0.17, -0.1), where GELU of a normalised input puts a "
             f"third: its activation is not GELU")


def _normalised(block, x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    """In train mode BatchNorm makes the output independent of the input's scale."""
    big = block(100 * x)
    if not close(big.mean((0, 2, 3)), y.mean((0, 2, 3)), 0.05):
        fail(f"{what}'s output follows its input's scale (input x 100 moves the channel means from "
             f"{float(y.mean()):.2f} to {float(big.mean()):.2f}): BatchNorm2d is missing between the convolution "
             f"and GELU")


def _batchnorm_after_conv(block: nn.Module, c_in: int, c_out: int, what: str) -> None:
    sizes = [value.numel() for key, value in block.state_dict().items() if key.endswith("running_mean")]
    if sizes and c_out not in sizes and c_in in sizes:
        fail(f"{what}'s BatchNorm2d has {c_in} channels, the input's: it normalises the input before the "
             f"convolution, but it must normalise the convolution's output")


OPERATIONS = {  # name: [(c_in, c_out, input [B, H, W], output [H, W])]
    "conv": [(1, 4, (4, 28, 28), (28, 28)), (3, 5, (16, 8, 12), (8, 12))],
    "down_conv": [(4, 8, (4, 28, 28), (14, 14)), (8, 16, (8, 14, 14), (7, 7)), (3, 5, (16, 8, 12), (4, 6))],
    "up_conv": [(16, 8, (8, 7, 7), (14, 14)), (3, 5, (16, 8, 12), (16, 24))],
}


def _shape_mistake(name: str, size_in: int, got: int) -> str:
    """What maps `size_in` pixels to `got` in operation `name`: its kernel, stride or padding mistake."""
    named = {
        "conv": {size_in - 2: "its 3 x 3 convolution has no padding (pad it by 1)",
                 size_in // 2: "its convolution has stride 2 (conv keeps the resolution: stride 1)"},
        "down_conv": {size_in: "its convolution has stride 1 (down_conv halves the resolution: stride 2)",
                      (size_in - 3) // 2 + 1: "its stride-2 convolution has no padding (pad it by 1)",
                      size_in * 2: "it upsamples (down_conv halves the resolution with a stride-2 convolution)"},
        "up_conv": {size_in: "it keeps the resolution (up_conv doubles it: a transposed convolution, stride 2)",
                    2 * size_in - 1: "its transposed convolution is 3 x 3, which gives 2H - 1 pixels (the course's "
                                     "UpConv is 4 x 4)",
                    2 * size_in + 2: "its transposed convolution has no padding (pad it by 1)",
                    size_in // 2: "it downsamples (up_conv doubles the resolution with a transposed convolution)"},
    }[name]
    return named.get(got, "check its kernel size, stride and padding")


def _reach(block, c_in: int, size: tuple, pixel: tuple) -> tuple[int, int]:
    """How many output rows and columns change when one input pixel does (eval mode: no batch statistics)."""
    x = torch.randn(1, c_in, *size)
    nudged = x.clone()
    nudged[..., pixel[0], pixel[1]] += 1.0
    with torch.no_grad():
        changed = (block(x) != block(nudged)).any(1)[0]
    return int(changed.any(1).sum()), int(changed.any(0).sum())


def _receptive_field(module) -> None:
    """conv: a 3 x 3 window; down_conv: an odd input pixel reaches 2 x 2 outputs (3 x 3, stride 2); up_conv: one
    input pixel reaches 4 x 4 outputs (a 4 x 4 transposed kernel, stride 2)."""
    expected = {"conv": ((9, 11), (4, 5), 3, "a 3 x 3 kernel (stride 1, padding 1)"),
                "down_conv": ((10, 12), (5, 7), 2, "a 3 x 3 kernel with stride 2 (padding 1), whose windows overlap by a pixel"),
                "up_conv": ((5, 6), (2, 3), 4, "a 4 x 4 transposed kernel with stride 2 (padding 1)")}
    for name, (size, pixel, reach, kernel) in expected.items():
        block = getattr(module, name)(2, 3).eval()
        rows, cols = _reach(block, 2, size, pixel)
        if (rows, cols) != (reach, reach):
            fail(f"in eval mode, one input pixel of {name} reaches {rows} x {cols} of its output pixels, not "
                 f"{reach} x {reach}: its convolution must have {kernel}")


@grades("1.2")
def unet_operations(module):
    """conv / down_conv / up_conv(c_in, c_out): resolution kept / halved / doubled on square and non-square
    inputs, then BatchNorm (of the convolution's output), then GELU; their kernels' reach."""
    with torch.no_grad():
        _operations(module)
    _receptive_field(module)


def _operations(module) -> None:
    for name, points in OPERATIONS.items():
        for c_in, c_out, (b, h, w), (h_out, w_out) in points:
            what = f"{name}({c_in}, {c_out})"
            block = getattr(module, name)(c_in, c_out)
            if not isinstance(block, nn.Module):
                fail(f"{name}(c_in, c_out) returned {shape_of(block)}: return an nn.Module (an nn.Sequential, say)")
            block.train()
            x = torch.randn(b, c_in, h, w)
            y = _run(block, x, what)
            if not isinstance(y, torch.Tensor) or y.dim() != 4:
                fail(f"{what} returned {shape_of(y)} for an input of shape {list(x.shape)}")
            if y.shape[1] != c_out:
                fail(f"{what} gives {y.shape[1]} channels, not c_out = {c_out}")
            if tuple(y.shape[2:]) != (h_out, w_out):
                fail(f"{what} maps {h} x {w} pixels to {y.shape[2]} x {y.shape[3]}, not {h_out} x {w_out}: "
                     f"{_shape_mistake(name, h, y.shape[2])}")
            _ends_with_gelu(y, what)
            _normalised(block, x, y, what)
            _batchnorm_after_conv(block, c_in, c_out, what)
            _gelu_shape(y, what)


# ---- 1.3 ------------------------------------------------------------------------------------------------------
UNETS = ((28, 1, 2), (32, 1, 3), (12, 3, 2))   # (image size, channels, batch): the course, the homework, colour


def _flatten(model, size: int, batch: int) -> None:
    s, channels = size // 4, 8
    h = torch.randn(batch, channels, s, s)
    what = f"Flatten of the {s} x {s} bottleneck of a {size}-pixel UNet"
    try:
        flat = model.flatten(h)
    except (RuntimeError, ValueError) as error:
        fail(f"{what} fails ({first_line(error)}): pool over the whole s x s bottleneck, s = image_size // 4")
    if not isinstance(flat, torch.Tensor) or flat.shape != (batch, channels, 1, 1):
        fail(f"{what} gives {shape_of(flat)}, not [{batch}, {channels}, 1, 1]: pool the whole s x s bottleneck "
             f"(s = image_size // 4) to 1 x 1")
    if close(flat, F.gelu(h.mean((2, 3), keepdim=True))):
        return
    if close(flat, F.gelu(h.amax((2, 3), keepdim=True))):
        fail(f"{what} takes the maximum over the pixels: it must average them")
    if close(flat, h.mean((2, 3), keepdim=True)):
        fail(f"{what} is missing its GELU after the average pooling")
    if close(flat, F.gelu(h).mean((2, 3), keepdim=True)):
        fail(f"{what} applies GELU before averaging: average first, then GELU")
    for k in range(1, s):
        if close(flat, F.gelu(h[..., :k, :k].mean((2, 3), keepdim=True))):
            fail(f"{what} averages only a {k} x {k} window: its pooling size must be s = image_size // 4 = {s}, "
                 f"not a fixed {k}")
    fail(f"{what} differs from GELU of the bottleneck's average, {where(flat, F.gelu(h.mean((2, 3), keepdim=True)))}")


def _unflatten(model, size: int, batch: int) -> None:
    s, channels = size // 4, 8
    flat = torch.randn(8, channels, 1, 1)
    what = f"Unflatten of a {size}-pixel UNet"
    try:
        y = model.unflatten(flat)
    except (RuntimeError, ValueError) as error:
        fail(f"{what} fails on [8, {channels}, 1, 1] ({first_line(error)}): it maps 1 x 1 back to s x s, "
             f"s = image_size // 4")
    if not isinstance(y, torch.Tensor) or y.shape != (8, channels, s, s):
        fail(f"{what} maps [8, {channels}, 1, 1] to {shape_of(y)}, not [8, {channels}, {s}, {s}]: a transposed "
             f"convolution with kernel and stride s = image_size // 4 = {s}")
    if torch.allclose(y, y[..., :1, :1].expand_as(y)):
        fail(f"{what} gives the same value at every pixel of the {s} x {s} map: use a transposed convolution "
             f"(kernel s, stride s), which learns a weight per pixel, not a plain upsampling")
    _ends_with_gelu(y, what)
    _normalised(model.unflatten, flat, y, what)


def _decoder(model, size: int, batch: int, channels: int) -> None:
    x = torch.randn(batch, channels, size, size)
    try:
        with torch.no_grad():
            out = model(x)
            skips, bottleneck = model.encode(x)
            base = model.decode(skips, bottleneck)
    except (RuntimeError, ValueError) as error:
        fail(f"the forward pass of a {size}-pixel UNet fails ({first_line(error)}): each UpBlock's input is the "
             f"tensor below it concatenated (dim=1) with the skip of the same resolution")
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        fail(f"the {size}-pixel UNet maps {list(x.shape)} to {shape_of(out)}")
    with torch.no_grad():
        for i, name in enumerate(("first (full-resolution)", "second", "third (lowest-resolution)")):
            changed = list(skips)
            changed[i] = changed[i] + 1.0
            if torch.equal(model.decode(tuple(changed), bottleneck), base):   # exact: a fresh model's response is small
                fail(f"the {name} skip connection does not reach the output: concatenate it in decode")
        if torch.equal(model.decode(skips, bottleneck + 1.0), base):
            fail("the unflattened bottleneck does not reach the output: the first UpBlock takes it, concatenated "
                 "with the lowest-resolution skip")
        seen = []

        def modulate(u):
            seen.append(tuple(u.shape))
            return u * 0.0
        silenced = model.decode(skips, bottleneck, modulate_up1=modulate)
    half, hidden = size // 2, model.config["hidden"]
    if seen != [(batch, hidden, half, half)]:
        fail(f"decode applied modulate_up1 to {seen or 'nothing'}: apply it once, to the first UpBlock's output "
             f"[{batch}, {hidden}, {half}, {half}]")
    if torch.equal(silenced, base):
        fail("decode does not use what modulate_up1 returns: the first UpBlock's output becomes modulate_up1's result")


@grades("1.3")
def course_unet(CourseUNet):
    """Flatten = GELU(mean over the s x s bottleneck) to 1 x 1, Unflatten back to s x s (transposed conv,
    BatchNorm, GELU), every skip concatenated, modulate_up1 applied to the first UpBlock's output; at 28, 32 and
    12 pixels (s = 7, 8, 3)."""
    for size, channels, batch in UNETS:
        model = CourseUNet(in_channels=channels, hidden=4, image_size=size)
        model.train()
        with torch.no_grad():
            _flatten(model, size, batch)
            _unflatten(model, size, batch)
        model.eval()
        _decoder(model, size, batch, channels)


# ---- 2.1, 3.1 -------------------------------------------------------------------------------------------------
def _amplified(model: nn.Module, *names: str) -> None:
    """A fresh model barely responds to its embeddings: scale the FCBlocks' weights so that every mistake shows."""
    with torch.no_grad():
        for name in names:
            for layer in getattr(model, name).modules():
                if isinstance(layer, nn.Linear):
                    layer.weight.mul_(10.0)


def _embed(model, name: str, inputs: torch.Tensor) -> torch.Tensor:
    return getattr(model, name)(inputs)[:, :, None, None]


def _rebuilt(model, x, modulation: str, time_inputs, class_inputs=None, neutral: str = ""):
    """The course's conditioned forward pass from the model's own encode, FCBlocks and decode, the FCBlocks fed
    `time_inputs` [B, 1] (and `class_inputs` [B, K]); `neutral` names an embedding left out (t1, t2, c1, c2)."""
    combine = (lambda h, e: h * e) if modulation == "multiply" else (lambda h, e: h + e)
    one = 1.0 if modulation == "multiply" else 0.0
    with torch.no_grad():
        skips, bottleneck = model.encode(x)
        t1 = one if neutral == "t1" else _embed(model, "fc1_t", time_inputs)
        t2 = one if neutral == "t2" else _embed(model, "fc2_t", time_inputs)
        if class_inputs is None:
            return model.decode(skips, combine(bottleneck, t1), modulate_up1=lambda u: combine(u, t2))
        c1 = 1.0 if neutral == "c1" else _embed(model, "fc1_c", class_inputs)
        c2 = 1.0 if neutral == "c2" else _embed(model, "fc2_c", class_inputs)
        return model.decode(skips, c1 * bottleneck + t1, modulate_up1=lambda u: c2 * u + t2)


EXACT = 1e-6   # the same computation in float32: a fresh model's response to its embeddings can be small

TIMES = (   # (image size, time modulation, times): the course's 28 pixels, the homework's 32, both modulations
    (28, None, torch.tensor([0.02, 0.5, 1.0])),
    (32, "add", torch.tensor([1.0, 0.75, 0.3, 0.05])),
)


@grades("2.1")
def time_conditioning(ConditionalCourseUNet):
    """One time per sample (t of shape [B], or one t for all), t itself as a [B, 1] column through fc1_t and
    fc2_t, each embedding reaching its place in the decoder; both time modulations, 28 and 32 pixels."""
    for size, modulation, t in TIMES:
        torch.manual_seed(size)
        model = ConditionalCourseUNet(in_channels=1, hidden=4, image_size=size, num_classes=0,
                                      time_modulation=modulation).eval()
        modulation = modulation or "multiply"
        _amplified(model, "fc1_t", "fc2_t")
        x, b = torch.randn(len(t), 1, size, size), len(t)
        at = f"the {size}-pixel UNet ({modulation}) and t = {[round(v, 2) for v in t.tolist()]}"
        try:
            with torch.no_grad():
                out = model(x, t)
        except (RuntimeError, ValueError, IndexError) as error:
            fail(f"the forward pass fails on t of shape [{b}] ({first_line(error)}): feed each sample's t to fc1_t "
                 f"and fc2_t as a [B, 1] column, their outputs as [B, channels, 1, 1]")
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            fail(f"the model maps {list(x.shape)} to {shape_of(out)}")
        with torch.no_grad():
            if torch.equal(model(x, t.flip(0)), out):
                fail(f"with {at} the output does not change with t: the time embedding never reaches the decoder")
        column = t.view(-1, 1)
        want = _rebuilt(model, x, modulation, column)
        if close(out, want, EXACT):
            with torch.no_grad():
                single = model(x, torch.tensor(0.5))
            if not close(single, _rebuilt(model, x, modulation, torch.full((b, 1), 0.5)), 1e-4):
                fail("a single time (a 0-d tensor) must condition every sample of the batch")
            continue
        variants = (("1 - t", {"time_inputs": 1 - column}),
                    ("first", {"time_inputs": column[:1].expand(b, 1)}),
                    ("t1", {"time_inputs": column, "neutral": "t1"}),
                    ("t2", {"time_inputs": column, "neutral": "t2"}),
                    ("1000", {"time_inputs": 1000 * column}))
        said = {"1 - t": "fc1_t and fc2_t get 1 - t instead of t",
                "first": "every sample gets the first sample's time instead of its own t[i]",
                "t1": "fc1_t's embedding does not reach the unflattened bottleneck",
                "t2": "fc2_t's embedding does not reach the first UpBlock's output",
                "1000": "fc1_t and fc2_t get t scaled by 1000 instead of t in [0, 1]"}
        for name, inputs in variants:
            if close(out, _rebuilt(model, x, modulation, **inputs), EXACT):
                fail(f"with {at}, {said[name]}")
        fail(f"with {at} the output differs from the decoder modulated by fc1_t(t) and fc2_t(t) of each sample's t as "
             f"a [B, 1] column, {where(out, want)}")


CLASSES = (   # (image size, classes, labels, times)
    (28, 10, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), torch.linspace(0.05, 1.0, 11)),
    (32, 4, torch.tensor([4, 2, 0, 3, 4]), torch.full((5,), 0.6)),
)


@grades("3.1")
def class_conditioning(ConditionalCourseUNet):
    """Labels as one-hot vectors of num_classes entries (the null label num_classes: all zeros) through fc1_c and
    fc2_c, one per sample; with 10 and with 4 classes."""
    for size, k, labels, t in CLASSES:
        torch.manual_seed(size)
        model = ConditionalCourseUNet(in_channels=1, hidden=4, image_size=size, num_classes=k).eval()
        _amplified(model, "fc1_t", "fc2_t", "fc1_c", "fc2_c")
        x, b = torch.randn(len(labels), 1, size, size), len(labels)
        at = f"the {k}-class UNet with labels {labels.tolist()}"
        try:
            with torch.no_grad():
                out = model(x, t, labels)
        except (RuntimeError, ValueError, IndexError, TypeError) as error:
            fail(f"the forward pass of {at} fails ({first_line(error)}): each label becomes a float one-hot vector "
                 f"of num_classes = {k} entries, the null label {k} all zeros")
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            fail(f"the model maps {list(x.shape)} to {shape_of(out)}")
        with torch.no_grad():
            if torch.equal(model(x, t, labels.roll(1)), out):
                fail(f"the output of {at} does not change with the labels: the class embedding never reaches the "
                     f"decoder")
        one_hot = F.one_hot(labels, k + 1)[:, :k].float()
        column = t.view(-1, 1)
        want = _rebuilt(model, x, "multiply", column, one_hot)
        if close(out, want, EXACT):
            continue
        variants = (
            ("wrapped", F.one_hot(labels % k, k).float(), ""),
            ("clamped", F.one_hot(labels.clamp(max=k - 1), k).float(), ""),
            ("first", one_hot[:1].expand(b, k), ""),
            ("c1", one_hot, "c1"),
            ("c2", one_hot, "c2"),
        )
        said = {"wrapped": f"the null label {k} gets class 0's one-hot vector: it must be all zeros",
                "clamped": f"the null label {k} gets class {k - 1}'s one-hot vector: it must be all zeros",
                "first": "every sample gets the first sample's label instead of its own",
                "c1": "fc1_c's embedding does not reach the unflattened bottleneck",
                "c2": "fc2_c's embedding does not reach the first UpBlock's output"}
        for name, vectors, neutral in variants:
            if close(out, _rebuilt(model, x, "multiply", column, vectors, neutral), EXACT):
                fail(f"with {at}, {said[name]}")
        fail(f"with {at} the output differs from the decoder modulated by fc1_c and fc2_c of each label's one-hot "
             f"vector ({k} entries, the null label all zeros), {where(out, want)}")
