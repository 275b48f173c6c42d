"""The UNet of the course figure (Part B), built from its named operations.

    Conv       3x3 conv, stride 1        + BatchNorm + GELU   (keeps resolution)
    DownConv   3x3 conv, stride 2        + BatchNorm + GELU   (halves resolution)
    UpConv     4x4 transposed, stride 2  + BatchNorm + GELU   (doubles resolution)
    Flatten    average pool of the s x s bottleneck to 1 x 1, then GELU
    Unflatten  s x s transposed conv from 1 x 1 back to s x s + BatchNorm + GELU
    Concat     channel-wise concatenation of a skip connection

With input size H (28 in the course, 32 for the homework's MNIST) the bottleneck is s = H / 4.
"""
import torch
from torch import nn

from helpers.foundation import validate

TIME_MODULATIONS = ("multiply", "add")


def conv(c_in, c_out):
    # Exercise 1.2 hint: a 3 x 3 convolution that keeps the resolution, then BatchNorm and GELU, in an nn.Sequential.
    ### BEGIN SOLUTION
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.GELU())
    ### END SOLUTION


def down_conv(c_in, c_out):
    # Exercise 1.2 hint: as conv, but the convolution's stride halves the resolution.
    ### BEGIN SOLUTION
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1), nn.BatchNorm2d(c_out), nn.GELU())
    ### END SOLUTION


def up_conv(c_in, c_out):
    # Exercise 1.2 hint: a 4 x 4 transposed convolution whose stride doubles the resolution, then BatchNorm and GELU.
    ### BEGIN SOLUTION
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.GELU())
    ### END SOLUTION


def conv_block(c_in, c_out):
    """ConvBlock: Conv, Conv."""
    return nn.Sequential(conv(c_in, c_out), conv(c_out, c_out))


def down_block(c_in, c_out):
    """DownBlock: DownConv, ConvBlock."""
    return nn.Sequential(down_conv(c_in, c_out), conv_block(c_out, c_out))


def up_block(c_in, c_out):
    """UpBlock: UpConv, ConvBlock."""
    return nn.Sequential(up_conv(c_in, c_out), conv_block(c_out, c_out))


class CourseUNet(nn.Module):
    """Unconditional UNet of the course figure: ``x [B, C, H, H] -> [B, C, H, H]`` (H divisible by 4)."""

    def __init__(self, in_channels: int = 1, hidden: int = 128, image_size: int = 28):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4 (two downsamplings), got {image_size}")
        self.config = dict(name="CourseUNet", in_channels=in_channels, hidden=hidden, image_size=image_size)
        d, s = hidden, image_size // 4
        self.image_size, self.in_channels = image_size, in_channels
        self.conv_in = conv_block(in_channels, d)
        self.down1 = down_block(d, d)
        self.down2 = down_block(d, 2 * d)
        # Exercise 1.3 hint: Flatten pools the s x s bottleneck to 1 x 1 (then GELU); Unflatten is a transposed conv back.
        ### BEGIN SOLUTION
        self.flatten = nn.Sequential(nn.AvgPool2d(s), nn.GELU())
        self.unflatten = nn.Sequential(nn.ConvTranspose2d(2 * d, 2 * d, s, s), nn.BatchNorm2d(2 * d), nn.GELU())
        ### END SOLUTION
        self.up1 = up_block(4 * d, d)
        self.up2 = up_block(2 * d, d)
        self.conv_out = conv_block(2 * d, d)
        self.head = nn.Conv2d(d, in_channels, 3, 1, 1)

    def check_input(self, x) -> torch.Tensor:
        """The batch x, checked (a float tensor [B, C, H, W]; float64 becomes float32) before torch fails deep
        inside a conv."""
        x, _, _ = validate.network_inputs(type(self).__name__, x, 0.0, None, self.in_channels, self.image_size, 0)
        return x

    def encode(self, x):
        """Encoder half: returns the skip tensors and the unflattened bottleneck."""
        h0 = self.conv_in(x)
        h1 = self.down1(h0)
        h2 = self.down2(h1)
        return (h0, h1, h2), self.unflatten(self.flatten(h2))

    def decode(self, skips, bottleneck, modulate_up1=None):
        """Decoder half; `modulate_up1` (if given) transforms the first UpBlock's output."""
        h0, h1, h2 = skips
        # Exercise 1.3 hint: each UpBlock (and conv_out) sees its input concatenated with the skip of its resolution.
        ### BEGIN SOLUTION
        u1 = self.up1(torch.cat([bottleneck, h2], dim=1))
        if modulate_up1 is not None:
            u1 = modulate_up1(u1)
        u2 = self.up2(torch.cat([u1, h1], dim=1))
        return self.head(self.conv_out(torch.cat([u2, h0], dim=1)))
        ### END SOLUTION

    def forward(self, x):
        skips, bottleneck = self.encode(self.check_input(x))
        return self.decode(skips, bottleneck)


def fc_block(f_in, f_out):
    """FCBlock of the course figure: Linear, GELU, Linear."""
    return nn.Sequential(nn.Linear(f_in, f_out), nn.GELU(), nn.Linear(f_out, f_out))


class ConditionalCourseUNet(CourseUNet):
    """The course UNet conditioned on time t in [0, 1] and, optionally, on a class label.

    Two FCBlocks embed t, two more embed the one-hot class vector c, and they modulate the decoder.
    The course documents' forms (Part B 2.1 and 2.4) are the defaults:

        time-only, time_modulation="multiply":   unflatten = unflatten * t1      up1 = up1 * t2
        time-only, time_modulation="add":        unflatten = unflatten + t1      up1 = up1 + t2
        class-conditioned:                       unflatten = c1 * unflatten + t1  up1 = c2 * up1 + t2

    Labels are long tensors; the label ``num_classes`` is the null class of classifier-free guidance,
    whose one-hot vector is all zeros. A time-only model's config records its time modulation.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, image_size: int = 32, num_classes: int = 0,
                 time_modulation: str | None = None):
        super().__init__(in_channels, hidden, image_size)
        if num_classes and time_modulation is not None:
            raise ValueError(f"a class-conditioned UNet adds t1 to c1 * unflatten (the course's form), so "
                             f"time_modulation={time_modulation!r} does not apply: leave it out.")
        if time_modulation not in (None, *TIME_MODULATIONS):
            raise ValueError(f"time_modulation must be one of {TIME_MODULATIONS}, not {time_modulation!r}.")
        self.config.update(name="ConditionalCourseUNet", num_classes=num_classes)
        self.num_classes = num_classes
        if not num_classes:
            self.time_modulation = time_modulation or "multiply"
            self.config.update(time_modulation=self.time_modulation)
        self.fc1_t, self.fc2_t = fc_block(1, 2 * hidden), fc_block(1, hidden)
        if num_classes:
            self.fc1_c, self.fc2_c = fc_block(num_classes, 2 * hidden), fc_block(num_classes, hidden)

    def forward(self, x, t, labels=None):
        x, t, labels = validate.network_inputs(type(self).__name__, x, t, labels, self.in_channels, self.image_size,
                                               self.num_classes)
        skips, bottleneck = self.encode(x)
        # Exercise 2.1 hint: one time per sample as a [B, 1] column; fc1_t and fc2_t embed it as [B, channels, 1, 1].
        ### BEGIN SOLUTION
        t = t.view(-1, 1)
        t1, t2 = self.fc1_t(t)[:, :, None, None], self.fc2_t(t)[:, :, None, None]
        ### END SOLUTION
        if self.num_classes:
            # Exercise 3.1 hint: one-hot vectors of num_classes entries (the null label: all zeros) through fc1_c, fc2_c.
            ### BEGIN SOLUTION
            one_hot = nn.functional.one_hot(labels, self.num_classes + 1)[:, :self.num_classes].to(x.dtype)
            c1, c2 = self.fc1_c(one_hot)[:, :, None, None], self.fc2_c(one_hot)[:, :, None, None]
            ### END SOLUTION
            return self.decode(skips, c1 * bottleneck + t1, modulate_up1=lambda up1: c2 * up1 + t2)
        if self.time_modulation == "multiply":
            return self.decode(skips, bottleneck * t1, modulate_up1=lambda up1: up1 * t2)
        return self.decode(skips, bottleneck + t1, modulate_up1=lambda up1: up1 + t2)
