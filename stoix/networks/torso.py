"""Torsos: the shared body of a network, chosen in `configs/network/` by `_target_`."""

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.initializers import orthogonal

from stoix.utils.config import StoixConfigError

ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "silu": nn.silu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "leaky_relu": nn.leaky_relu,
}


def parse_activation(name: str) -> callable:
    if name not in ACTIVATIONS:
        raise StoixConfigError(f"activation={name!r} is not known; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def as_image(x: chex.Array) -> chex.Array:
    """Integer images (uint8 pixels from Atari, say) are scaled to [0, 1]; floats pass."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x.astype(jnp.float32) / 255.0
    return x


CONV_IMPLS = ("auto", "xla", "patches")


def image_patches(x: chex.Array, kernel: int, stride: int) -> chex.Array:
    """(N, H, W, C) -> (N, ceil(H/stride), ceil(W/stride), kernel*kernel*C): each output
    position's `SAME`-padded receptive field, rows then columns then channels (the order of a
    (kernel, kernel, C, F) weight reshaped to (kernel*kernel*C, F))."""
    height, width = x.shape[-3], x.shape[-2]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + kernel - height, 0)
    pad_w = max((out_w - 1) * stride + kernel - width, 0)
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    windows = [
        x[:, i : i + span_h : stride, j : j + span_w : stride] for i in range(kernel) for j in range(kernel)
    ]
    return jnp.concatenate(windows, axis=-1)


class Conv(nn.Module):
    """A 2-D convolution over (N, H, W, C) with `SAME` padding and `nn.Conv`'s parameters
    (`kernel` (k, k, C, F), `bias`; same names and initialisers, so checkpoints move between
    the two forms), computed by XLA's convolution or as one matrix product over image patches.

    NOTE: XLA's CPU backend runs a convolution inside a loop body (a `lax.scan`: every Anakin
    update, every PPO epoch and minibatch) an order of magnitude slower than the same
    convolution outside one, while matrix products keep their speed: the IMPALA ResNet's
    forward and backward pass at batch 32 took 0.36 s alone and 4.1 s per iteration inside a
    scan, 0.73 s in the patches form (see docs/benchmarks.md). Anakin trains entirely inside
    loops, so `impl="auto"` takes the patches form on CPU and XLA's convolution elsewhere.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    impl: str = "auto"  # auto | xla | patches

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        if self.impl not in CONV_IMPLS:
            raise StoixConfigError(f"conv_impl={self.impl!r} is not known; choose one of {list(CONV_IMPLS)}.")
        k, channels = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        impl = self.impl
        if impl == "auto":
            impl = "patches" if jax.default_backend() == "cpu" else "xla"
        if impl == "xla":
            y = jax.lax.conv_general_dilated(
                x, kernel, (self.stride, self.stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        else:
            y = image_patches(x, k, self.stride) @ kernel.reshape(k * k * channels, self.features)
        return y + bias


class MLPTorso(nn.Module):
    """Dense layers, each followed by optional layer norm and the activation."""

    layer_sizes: Sequence[int]
    activation: str = "relu"
    use_layer_norm: bool = False
    activate_final: bool = True

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        act = parse_activation(self.activation)
        for i, size in enumerate(self.layer_sizes):
            x = nn.Dense(size, kernel_init=orthogonal(np.sqrt(2.0)))(x)
            if self.use_layer_norm:
                x = nn.LayerNorm(use_scale=False)(x)
            if self.activate_final or i < len(self.layer_sizes) - 1:
                x = act(x)
        return x


class CNNTorso(nn.Module):
    """Convolutions over (..., H, W, C) images, flattened, then an optional MLP. Integer
    images are scaled to [0, 1] first."""

    channel_sizes: Sequence[int]
    kernel_sizes: Sequence[int]
    strides: Sequence[int]
    activation: str = "relu"
    use_layer_norm: bool = False
    hidden_sizes: Sequence[int] = ()
    conv_impl: str = "auto"  # auto (patches on CPU, XLA's convolution elsewhere) | xla | patches

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        if not len(self.channel_sizes) == len(self.kernel_sizes) == len(self.strides):
            raise StoixConfigError(
                "network CNNTorso: channel_sizes, kernel_sizes and strides must have the same "
                f"length, got {len(self.channel_sizes)}, {len(self.kernel_sizes)}, "
                f"{len(self.strides)}."
            )
        act = parse_activation(self.activation)
        x = as_image(x)
        batch_shape = x.shape[:-3]
        x = x.reshape((-1, *x.shape[-3:]))
        for channels, kernel, stride in zip(self.channel_sizes, self.kernel_sizes, self.strides):
            x = Conv(channels, kernel, stride, self.conv_impl)(x)
            if self.use_layer_norm:
                x = nn.LayerNorm(reduction_axes=(-3, -2, -1))(x)
            x = act(x)
        x = x.reshape((*batch_shape, -1))
        if self.hidden_sizes:
            x = MLPTorso(self.hidden_sizes, self.activation, self.use_layer_norm)(x)
        return jnp.asarray(x)


def max_pool_3x3_stride_2(x: chex.Array) -> chex.Array:
    """`nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")` over (N, H, W, C), written as
    the maximum of nine strided slices.

    NOTE: same values as flax's; the gradient differs only in how ties are shared. XLA's CPU
    backward of `nn.max_pool` (select-and-scatter) is ~4x slower than this one's, and it was
    half of the IMPALA ResNet's training step on CPU.
    """
    height, width = x.shape[-3], x.shape[-2]
    out_h, out_w = -(-height // 2), -(-width // 2)
    pad_h, pad_w = max(2 * out_h + 1 - height, 0), max(2 * out_w + 1 - width, 0)
    x = jnp.pad(
        x,
        ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
        constant_values=-jnp.inf,
    )
    out = None
    for i in range(3):
        for j in range(3):
            window = x[:, i : i + 2 * out_h - 1 : 2, j : j + 2 * out_w - 1 : 2]
            out = window if out is None else jnp.maximum(out, window)
    return out


class _ResidualBlock(nn.Module):
    channels: int
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        y = Conv(self.channels, 3, impl=self.conv_impl)(nn.relu(x))
        y = Conv(self.channels, 3, impl=self.conv_impl)(nn.relu(y))
        return x + y


class VisualResNetTorso(nn.Module):
    """The IMPALA ResNet (Espeholt et al., 2018): per stage a convolution, a 3x3 max-pool with
    stride 2 and `blocks_per_stage` residual blocks; then a dense layer. Integer images are
    scaled to [0, 1] first."""

    channels_per_stage: Sequence[int] = (16, 32, 32)
    blocks_per_stage: int = 2
    hidden_size: int = 256
    conv_impl: str = "auto"  # auto (patches on CPU, XLA's convolution elsewhere) | xla | patches

    @nn.compact
    def __call__(self, x: chex.Array) -> chex.Array:
        x = as_image(x)
        batch_shape = x.shape[:-3]
        x = x.reshape((-1, *x.shape[-3:]))
        for channels in self.channels_per_stage:
            x = Conv(channels, 3, impl=self.conv_impl)(x)
            x = max_pool_3x3_stride_2(x)
            for _ in range(self.blocks_per_stage):
                x = _ResidualBlock(channels, self.conv_impl)(x)
        x = nn.relu(x).reshape((*batch_shape, -1))
        return nn.relu(nn.Dense(self.hidden_size, kernel_init=orthogonal(np.sqrt(2.0)))(x))
