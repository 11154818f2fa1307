"""The cost model counts what the frameworks compute: a hand count, torch's FlopCounterMode and XLA's cost analysis.

The framework cross-checks are exact (no tolerance): each known difference
between a counter's convention and ours is computed and named in the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from vaebench.model.catalogue import MODELS, get_model
from vaebench.model.costs import ADAM_FLOPS_PER_PARAM, CONVENTION, layer_costs, model_costs, step_flops_per_image

MODEL_NAMES = sorted(MODELS)


def test_mlp_forward_flops_match_a_hand_count():
    # pytorch/examples' VAE: 784 -> 400 -> (20, 20) -> 400 -> 784, one MAC per weight per image
    macs = 784 * 400 + 2 * (400 * 20) + 20 * 400 + 400 * 784
    assert macs == 651_200
    costs = model_costs(get_model("mlp").spec, 128)
    assert costs["total"]["macs"] == macs
    assert costs["total"]["forward_flops"] == 2 * macs == 1_302_400
    # the first layer reads the image: no gradient to its input, so backward is 2*forward minus its 784*400 MACs
    assert costs["total"]["grad_input_flops"] == 2 * (macs - 784 * 400)
    assert costs["total"]["grad_weight_flops"] == 2 * macs
    params = 784 * 400 + 400 + 2 * (400 * 20 + 20) + 20 * 400 + 400 + 400 * 784 + 784
    assert costs["total"]["params"] == params and costs["total"]["param_bytes"] == 4 * params
    assert costs["total"]["optimizer_flops"] == ADAM_FLOPS_PER_PARAM * params / 128
    assert costs["convention"] == CONVENTION and "1 MAC = 2 FLOPs" in CONVENTION


def test_conv_counts_padded_taps_and_transposed_convs_in_direct_form():
    layers = {c.name: c for c in layer_costs(get_model("conv").spec)}
    first = layers["encoder/0"]  # 28x28x1 -> 14x14x32, stride 2, padded (0, 1)
    assert first.macs == 14 * 14 * 9 * 1 * 32
    assert first.valid_macs == 41 * 41 * 1 * 32  # per axis 14 outputs x 3 taps, less the one tap on the padded row
    assert first.grad_input_flops == 0 and first.grad_weight_flops == first.forward_flops
    up = layers["decoder/2"]  # transposed 7x7x64 -> 14x14x64: every input pixel through the whole 3x3 kernel
    assert up.macs == 7 * 7 * 9 * 64 * 64
    assert up.valid_macs == 20 * 20 * 64 * 64  # the full 15x15 output's last row and column are cropped
    assert up.grad_input_flops == up.forward_flops
    assert up.activation_elements == 14 * 14 * 64


def test_step_flops_per_image_adds_every_part_and_depends_on_batch_only_through_adam():
    spec = get_model("conv").spec
    t = model_costs(spec, 64)["total"]
    parts = t["forward_flops"] + t["grad_input_flops"] + t["grad_weight_flops"] + t["elementwise_flops"] + t["optimizer_flops"]
    assert step_flops_per_image(spec, 64) == pytest.approx(parts)
    delta = step_flops_per_image(spec, 64) - step_flops_per_image(spec, 128)
    assert delta == pytest.approx(ADAM_FLOPS_PER_PARAM * spec.num_params() * (1 / 64 - 1 / 128))
    with pytest.raises(ValueError):
        model_costs(spec, 0)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_torch_flop_counter_agrees_on_the_torch_plugins_network(model_name):
    """FlopCounterMode counts matrix products (mm, addmm, convolution and their backward), padded taps included,
    a transposed conv as its direct form: our ``macs`` convention exactly. It counts no elementwise op (bias, ReLU,
    loss, Adam), so it is compared with the matrix FLOPs only."""
    pytest.importorskip("torch")
    pytest.importorskip("vaebench_torch")
    from torch.utils.flop_counter import FlopCounterMode

    from vaebench.model.config import AdamConfig
    from vaebench.model.weights import init_params
    from vaebench.plugin import registry

    spec = get_model(model_name).spec
    batch = 2
    backend_cls, _ = registry.load("torch")
    model = backend_cls(device="cpu").build(spec, AdamConfig())
    model.load_weights(init_params(spec, 0))
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), np.float32)
    eps = rng.standard_normal((batch, spec.noise_dim)).astype(np.float32)
    t = model_costs(spec, batch)["total"]
    with FlopCounterMode(display=False) as forward:
        model.evaluate(x, eps)
    assert forward.get_total_flops() == batch * t["forward_flops"]
    # the whole step through the contract: forward, backward (torch skips the image's gradient, as we do), Adam (uncounted)
    with FlopCounterMode(display=False) as step:
        model.fetch([model.train_step(x, eps)])
    assert step.get_total_flops() == batch * t["matrix_step_flops"]


def _xla_flops(fn, *args) -> float:
    import jax

    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_xla_cost_analysis_agrees_layer_by_layer_on_the_jax_plugins_layers(model_name):
    """XLA counts a convolution's taps only where they read a real pixel (no padded tap, no hole of a dilated
    input, no cropped output): our ``valid_macs``. It also counts the bias: one add per output element forward,
    and for the bias gradient a sum over the batch and pixels, ``batch * out - c_out`` adds. With those two named,
    the three products of every layer agree exactly; the whole loss is not compared, since XLA also counts every
    elementwise op of the loss, whose exact count depends on its fusion choices."""
    jax = pytest.importorskip("jax")
    pytest.importorskip("vaebench_jax")
    import jax.numpy as jnp

    from vaebench.model.layers import Conv2D
    from vaebench.model.weights import init_params
    from vaebench_jax.model import Layers

    spec = get_model(model_name).spec
    batch = 2
    costs = {c.name: c for c in layer_costs(spec)}
    checked = 0
    for info in spec.layers():
        if info.name not in costs:
            continue
        c = costs[info.name]
        if c.kind == "quantizer":  # not a layer the plugin builds alone: the torch counter checks it, in the whole step
            checked += 1
            continue
        layer = info.layer
        kind = ("conv_transpose" if layer.transpose else "conv") if isinstance(layer, Conv2D) else "dense"

        def apply(p, x, info=info, kind=kind):  # the plugin's own layer, from the canonical parameters
            return getattr(Layers(p), kind)(info)(x)

        mod = type("Layer", (), {"apply": staticmethod(apply)})
        x = jnp.asarray(np.random.default_rng(0).random((batch, *info.in_shape), np.float32))
        p = {k: v for k, v in init_params(spec, 0).items() if k.startswith(f"{info.name}/")}
        if kind == "conv_transpose":  # the plugin's layout for transposed kernels: (h, w, out, in)
            p[f"{info.name}/kernel"] = p[f"{info.name}/kernel"].transpose(0, 1, 3, 2)
        p = {k: jnp.asarray(v) for k, v in p.items()}
        y = mod.apply(p, x)
        out = int(np.prod(info.out_shape))
        bias_grad = batch * out - info.out_shape[-1]

        def grad_input(p, x, g, mod=mod):
            return jax.vjp(lambda x: mod.apply(p, x), x)[1](g)[0]

        def grad_weight(p, x, g, mod=mod):
            return jax.vjp(lambda p: mod.apply(p, x), p)[1](g)[0]

        assert _xla_flops(mod.apply, p, x) == batch * (2 * c.valid_macs + out), info.name
        assert _xla_flops(grad_input, p, x, y) == batch * 2 * c.valid_macs, info.name
        assert _xla_flops(grad_weight, p, x, y) == batch * 2 * c.valid_macs + bias_grad, info.name
        checked += 1
    assert checked == len(costs)


def _valid_taps(n_in: int, n_out: int, kernel: int, stride: int, before: int) -> int:
    """Taps reading a real pixel, counted with the reference convolution: ones through a ones kernel."""
    from vaebench.model.reference import conv2d

    after = (n_out - 1) * stride + kernel - n_in - before
    x = np.ones((1, n_in, 1, 1))
    pad = np.pad(x, ((0, 0), (before, max(after, 0)), (0, 0), (0, 0)))[:, : (n_out - 1) * stride + kernel]
    out = conv2d(np.broadcast_to(pad, (1, pad.shape[1], kernel, 1)).copy(), np.ones((kernel, kernel, 1, 1)), stride, (0, 0))
    return int(out[0, :, 0, 0].sum() / kernel)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_every_count_of_every_layer_against_an_independent_count(model_name):
    from vaebench.model.layers import Conv2D, Dense

    spec = get_model(model_name).spec
    costs = model_costs(spec, 32)
    layers = {r["name"]: r for r in costs["layers"]}
    weighted = [i for i in spec.layers() if i.param_shapes]
    assert list(layers) == [i.name for i in weighted] and costs["model"] == model_name
    assert (costs["batch_size"], costs["per"]) == (32, "image")
    act = {"relu": 2, "tanh": 4, None: 0}  # forward + backward per output element, the convention's counts
    for info in weighted:
        row, layer = layers[info.name], info.layer
        out = int(np.prod(info.out_shape))
        if row["kind"] == "quantizer":  # positions x codes x dimension, twice forward, once backward (to the codebook)
            nkd = 49 * layer.codes * info.in_shape[-1]
            assert (row["macs"], row["forward_flops"], row["grad_input_flops"], row["grad_weight_flops"]) == (
                2 * nkd,
                4 * nkd,
                0,
                2 * nkd,
            )
            continue
        kind = "dense" if isinstance(layer, Dense) else "conv_transpose" if layer.transpose else "conv"
        assert row["kind"] == kind
        assert row["elementwise_flops"] == 2 * out + act[layer.activation] * out  # bias forward and backward + activation
        assert row["param_bytes"] == 4 * sum(int(np.prod(s)) for s in info.param_shapes.values())
        assert row["step_flops"] == row["forward_flops"] + row["grad_input_flops"] + row["grad_weight_flops"]
        if isinstance(layer, Conv2D):
            small, big = (info.in_shape, info.out_shape) if layer.transpose else (info.out_shape, info.in_shape)
            per_axis = _valid_taps(big[0], small[0], layer.kernel, layer.stride, info.padding[0])
            assert row["valid_macs"] == per_axis**2 * info.in_shape[-1] * layer.filters, info.name
    total = costs["total"]
    pixels = 28 * 28
    assert total["valid_macs"] == sum(r["valid_macs"] for r in layers.values())
    assert total["matrix_step_flops"] == total["forward_flops"] + total["grad_input_flops"] + total["grad_weight_flops"]
    loss = 13 * pixels + 18 * spec.latent_dim  # BCE 13 per pixel, reparameterisation 8 and KL 10 per latent
    if spec.quantizer is not None:  # MSE 9 per pixel, the VQ terms 15 per entry of the 7x7x16 map
        loss = 9 * pixels + 15 * 7 * 7 * 16
    assert total["elementwise_flops"] == sum(r["elementwise_flops"] for r in layers.values()) + loss
    assert total["activation_bytes"] == 4 * (pixels + sum(int(np.prod(i.out_shape)) for i in weighted))


def test_a_batch_of_one_is_a_batch_and_none_is_refused():
    spec = get_model("mlp").spec
    assert model_costs(spec, 1)["total"]["optimizer_flops"] == ADAM_FLOPS_PER_PARAM * spec.num_params()
    with pytest.raises(ValueError, match="^batch_size must be at least 1, got 0$"):
        model_costs(spec, 0)


def test_asymmetric_padding_counts_taps_on_the_side_it_pads():
    # conv's first layer pads (0, 1): the taps that miss are on the bottom/right edge, one row of the 3x3 window
    first = layer_costs(get_model("conv").spec)[0]
    assert first.valid_macs == _valid_taps(28, 14, 3, 2, 0) ** 2 * 32 == 41 * 41 * 32
    sym = layer_costs(get_model("conv-sym").spec)[0]  # pads (1, 1): the misses are on the top/left edge
    assert sym.valid_macs == _valid_taps(28, 14, 3, 2, 1) ** 2 * 32


@pytest.mark.parametrize("k", [1, 5])
def test_the_iwae_bound_counts_the_decoder_and_the_bernoulli_term_k_times_per_image_by_hand(k):
    """iwae-mlp (784-200-200-50 tanh) under ``--objective iwae --iw-samples K``: the encoder and Adam once per image,
    the decoder, the reparameterisation, the BCE and the log-weights K times, by a count written out here."""
    from vaebench.model.loss import Objective

    spec = get_model("iwae-mlp").spec
    iwae = spec.with_objective(Objective("iwae", samples=k))
    plain, costs = model_costs(spec, 20)["total"], model_costs(iwae, 20)
    enc = 784 * 200 + 200 * 200 + 2 * (200 * 50)  # two tanh layers and the two heads
    dec = 50 * 200 + 200 * 200 + 200 * 784
    assert plain["macs"] == enc + dec and plain["samples"] == 1
    total = costs["total"]
    assert total["macs"] == enc + k * dec and total["samples"] == k
    assert total["forward_flops"] == 2 * (enc + k * dec)
    assert total["grad_input_flops"] == 2 * (enc - 784 * 200 + k * dec) and total["grad_weight_flops"] == 2 * (enc + k * dec)
    enc_out, dec_out = 200 + 200 + 50 + 50, 200 + 200 + 784
    tanh_out = {"enc": 400, "dec": 400}  # the elementwise work: bias 2 per output, tanh 4 more on the hidden layers
    layers_elementwise = 2 * enc_out + 4 * tanh_out["enc"] + k * (2 * dec_out + 4 * tanh_out["dec"])
    loss = 13 * 784 * k + (8 + 10) * k * 50 + 12 * k  # BCE; reparam + log w per latent; the log-sum-exp per sample
    assert total["elementwise_flops"] == layers_elementwise + loss
    assert total["activation_bytes"] == 4 * (784 + enc_out + k * dec_out)
    assert total["params"] == plain["params"] and total["optimizer_flops"] == plain["optimizer_flops"]
    assert [r["passes"] for r in costs["layers"]] == [1, 1, 1, 1] + [k] * 3
    assert step_flops_per_image(iwae, 20) == pytest.approx(
        total["forward_flops"]
        + total["grad_input_flops"]
        + total["grad_weight_flops"]
        + total["elementwise_flops"]
        + total["optimizer_flops"]
    )
    assert "K times per image" in CONVENTION
    beta = model_costs(spec.with_objective(Objective("beta-vae", beta=4.0)), 20)["total"]  # a weighting: the VAE's work
    assert beta == plain
