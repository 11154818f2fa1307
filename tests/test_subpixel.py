"""The sub-pixel form computes the transposed convolution exactly: the derivation checked against the reference.

The reference (:func:`vaebench.model.reference.conv2d_transpose`) scatters
every input pixel through the kernel; the sub-pixel form gathers. They share
no code, so agreement to float64 rounding over every transposed layer of the
catalogue and a grid of strides, kernels and crops is the proof the plugins
lean on when they offer ``transpose=subpixel``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vaebench.model.catalogue import MODELS, get_model
from vaebench.model.layers import Conv2D, LayerInfo
from vaebench.model.reference import conv2d, conv2d_transpose
from vaebench.model.subpixel import depth_to_space, subpixel, subpixel_kernel


def pad_or_crop(x: np.ndarray, before: int, after: int) -> np.ndarray:
    """Pad (positive) or crop (negative) both spatial axes of NHWC ``x``."""
    x = np.pad(x, ((0, 0), (max(before, 0), max(after, 0)), (max(before, 0), max(after, 0)), (0, 0)))
    h = x.shape[1]
    lo, hi = max(-before, 0), h - max(-after, 0)
    return x[:, lo:hi, lo:hi]


def through_subpixel(info: LayerInfo, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    form = subpixel(info)
    z = conv2d(pad_or_crop(x, *form.padding), subpixel_kernel(form, kernel), 1, (0, 0))
    assert z.shape[1] == form.blocks
    return depth_to_space(z, form)


TRANSPOSED = [
    (name, i)
    for name in sorted(MODELS)
    for i in get_model(name).spec.layers()
    if i.param_shapes and getattr(i.layer, "transpose", False)
]


@pytest.mark.parametrize("name,info", TRANSPOSED, ids=[f"{n}:{i.name}" for n, i in TRANSPOSED])
def test_every_transposed_layer_of_the_catalogue(name, info):
    gen = np.random.default_rng(0)
    x = gen.standard_normal((2, *info.in_shape))
    kernel = gen.standard_normal(next(v for k, v in info.param_shapes.items() if k.endswith("kernel")))
    want = conv2d_transpose(x, kernel, info.layer.stride, info.crop, info.out_shape[0])
    np.testing.assert_allclose(through_subpixel(info, x, kernel), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride,kernel,n_in", list(itertools.product((1, 2, 3), (1, 2, 3, 4, 5), (1, 4, 7))))
def test_a_grid_of_strides_kernels_and_crops(stride, kernel, n_in):
    gen = np.random.default_rng(stride * 100 + kernel * 10 + n_in)
    full = (n_in - 1) * stride + kernel
    for before in range(0, kernel):
        for out in {max(1, full - before - a) for a in range(0, kernel)}:
            if before + out > full:
                continue
            info = LayerInfo(
                "t", Conv2D(3, kernel, stride, transpose=True), (n_in, n_in, 2), (out, out, 3), crop=(before, full - before - out)
            )
            x = gen.standard_normal((1, n_in, n_in, 2))
            w = gen.standard_normal((kernel, kernel, 2, 3))
            want = conv2d_transpose(x, w, stride, info.crop, out)
            np.testing.assert_allclose(through_subpixel(info, x, w), want, rtol=1e-12, atol=1e-12, err_msg=str(info))


def test_the_conv_decoder_upsampling_is_a_2x2_window_of_four_phases():
    info = next(i for i in get_model("conv").spec.layers() if i.name == "decoder/2")  # 7x7x64 -> 14x14x64, crop (0, 1)
    form = subpixel(info)
    # phase 0 reads tap 0 at offset 0 and tap 2 at offset -1; phase 1 reads tap 1 at offset 0
    assert form.taps == ((2, 3), (0, 1)) and form.padding == (1, 0) and form.blocks == 7 and form.window == 2
    assert (form.stride, form.kernel, form.out) == (2, 3, 14)  # the plugins read the kernel size from the form
    with pytest.raises(ValueError, match="not a transposed"):
        subpixel(get_model("conv").spec.layers()[0])
