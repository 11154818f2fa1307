"""What a training step costs, counted from the spec alone (no framework): FLOPs, parameters, activations.

Why from the spec: a throughput says how fast, not how much work. Dividing the
work a step must do by the time it took gives achieved FLOP/s, comparable to
the machine's peak and across frameworks, because the count is the same for
every backend that computes the spec's function.

Convention (stated again in every output as :data:`CONVENTION`):

* **1 multiply-accumulate (MAC) = 2 FLOPs.** ``macs`` counts the products of
  dense layers and convolutions only.
* **Padded taps are counted** in ``macs``: a 3x3 convolution costs
  ``out_h * out_w * 9 * c_in * c_out`` MACs whatever its padding, which is what
  a framework computing on an explicitly padded input does and what
  ``torch.utils.flop_counter`` counts. ``valid_macs`` counts only the taps that
  read a real input pixel (XLA's ``cost_analysis`` counts these).
* **A transposed convolution costs the MACs of the direct convolution whose
  gradient it is**: ``in_h * in_w * k * k * c_in * c_out`` (every input pixel
  scattered through the whole kernel: the full output before cropping).
* **Training step**, per layer: forward ``2*macs``; gradient to the input
  ``2*macs``, except for the first layer that reads the image (nothing needs
  the image's gradient); gradient to the weights ``2*macs``.
* **Elementwise FLOPs are counted apart** (``elementwise_flops``), one FLOP per
  arithmetic operation per element, a transcendental (exp, log1p, sqrt)
  counted as one: bias add forward 1 and its gradient (a sum) 1 per output
  element; ReLU forward 1 and backward 1 per output element; tanh forward 1
  and backward 3 (``dy * (1 - y * y)``) per output element; the loss and the
  reparameterisation with the per-element counts in :data:`LOSS_FLOPS`; Adam
  :data:`ADAM_FLOPS_PER_PARAM` per parameter per step (divided by the batch
  size per image). Reshapes and flattens cost nothing.
* **The IWAE bound** (``--objective iwae``, K samples) runs the decoder on
  ``K`` latents per image: every decoder layer, the Bernoulli term and the
  reparameterisation count ``K`` times per image (a row's ``passes``), the
  encoder and Adam once; the log-weights ``0.5 * sum(eps^2 + logvar - z^2)``
  and the log-sum-exp over the samples replace the analytic KL, with the counts
  in :data:`LOSS_FLOPS`. Every other objective runs each layer once.
* **Bytes are float32** (4 bytes): parameters; activations are what a
  training step keeps for the backward pass per image: the input image plus
  every dense or convolution layer's output (a ReLU counted once, in place).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vaebench.model.layers import Conv2D, Dense, LayerInfo, ModelSpec, Quantizer

BYTES_PER_FLOAT = 4
#: the products of a layer with weights (:class:`LayerCost`: forward_flops, grad_input_flops, grad_weight_flops)
PHASES = ("forward", "grad_input", "grad_weights")
# p -= lr * (m / bc1) / (sqrt(v / bc2) + eps): m update 3 (2 mul, 1 add), v update 4 (g*g, 2 mul, 1 add),
# the two bias corrections 2, sqrt 1, + eps 1, divide 1, times lr 1, subtract 1
ADAM_FLOPS_PER_PARAM = 14
# per element, forward + backward: BCE with logits max(l,0) - l*t + log1p(exp(-|l|)) is 7 forward
# (relu, mul, sub, abs, neg, exp, log1p) + 1 add, its gradient sigmoid(l) - t about 4; the pixel sum 1;
# reparam z = mean + exp(logvar/2) * eps 4 forward, 4 backward; KL -0.5 * sum(1 + lv - m*m - exp(lv)) 6 forward, 4 backward
#: an activation's FLOPs per output element, forward + backward: ReLU 1 + 1 (a compare, a select);
#: tanh 1 (one transcendental) + 3 (its gradient dy * (1 - y * y) from the output kept)
ACTIVATION_FLOPS = {"relu": 2, "tanh": 4}
# IWAE, per sample: log w per latent eps*eps + logvar - z*z, the sum and the 0.5 (5 forward, 5 backward); per
# sample the recon subtraction 2 and the log-sum-exp max, subtract, exp, sum, log (5 forward, 5 backward)
LOSS_FLOPS = {
    "bce_per_pixel": 8 + 4 + 1,
    "reparam_per_latent": 8,
    "kl_per_latent": 10,
    "iwae_log_w_per_latent": 10,
    "iwae_per_sample": 12,
    # a VQ model: per pixel the centring 1, error 1, square 1, mean 1 forward and 3 backward (9 with the 2 / variance);
    # per latent entry the straight-through add and subtract 2, the two terms' subtract, square, mean 6, beta 1,
    # backward 6, and the distances' codebook norm and scale per code entry 3
    "mse_per_pixel": 9,
    "vq_per_latent": 15,
}

CONVENTION = (
    "1 MAC = 2 FLOPs; dense and convolution products only in macs/flops; padded taps counted (valid_macs: only taps "
    "reading a real pixel, XLA's count); a transposed conv costs the MACs of the direct conv it is the gradient of "
    "(in_h*in_w*k*k*c_in*c_out); step = forward + gradient to input (none for the first layer reading the image) + "
    "gradient to weights, each 2*macs; elementwise FLOPs (bias, ReLU, tanh, loss, reparam, Adam "
    f"{ADAM_FLOPS_PER_PARAM}/parameter/step) counted apart, 1 per operation per element; under the IWAE bound the "
    "decoder, the Bernoulli term and the reparameterisation count K times per image (passes); a VQ bottleneck costs "
    "its distances and its lookup, N*K*D MACs each, and the lookup's gradient to the codebook; bytes float32"
)


def _axis_taps(n_in: int, n_out: int, kernel: int, stride: int, before: int) -> tuple[int, int]:
    """``(all taps, valid taps)`` along one axis of a direct convolution ``n_in -> n_out``, padded ``before``."""
    valid = sum(1 for o in range(n_out) for t in range(kernel) if 0 <= o * stride + t - before < n_in)
    return n_out * kernel, valid


@dataclass(frozen=True)
class LayerCost:
    """One layer's work per image (FLOPs) and size; see the module docstring for the convention."""

    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int
    valid_macs: int
    forward_flops: int
    grad_input_flops: int
    grad_weight_flops: int
    elementwise_flops: int
    activation_elements: int

    @property
    def step_flops(self) -> int:
        """Forward plus both backward products (matrix FLOPs only)."""
        return self.forward_flops + self.grad_input_flops + self.grad_weight_flops


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def layer_cost(info: LayerInfo, needs_input_grad: bool = True) -> LayerCost | None:
    """The cost of one dense or convolution layer per image, or ``None`` for a free reshape."""
    layer = info.layer
    if isinstance(layer, Dense):
        kind = "dense"
        macs = valid = info.in_shape[0] * layer.units
    elif isinstance(layer, Conv2D):
        k, s = layer.kernel, layer.stride
        c_in, c_out = info.in_shape[-1], layer.filters
        # the direct convolution: for a transposed one, the convolution it is the gradient of (out -> in)
        small, big = (info.in_shape, info.out_shape) if layer.transpose else (info.out_shape, info.in_shape)
        taps = [_axis_taps(big[a], small[a], k, s, info.padding[0]) for a in (0, 1)]
        macs = taps[0][0] * taps[1][0] * c_in * c_out
        valid = taps[0][1] * taps[1][1] * c_in * c_out
        kind = "conv_transpose" if layer.transpose else "conv"
    elif isinstance(layer, Quantizer):
        return _quantizer_cost(info)
    else:
        return None
    out = _prod(info.out_shape)
    activation = out * ACTIVATION_FLOPS.get(layer.activation, 0) if layer.activation else 0
    return LayerCost(
        name=info.name,
        kind=kind,
        in_shape=tuple(info.in_shape),
        out_shape=tuple(info.out_shape),
        params=sum(_prod(p) for p in info.param_shapes.values()),
        macs=macs,
        valid_macs=valid,
        forward_flops=2 * macs,
        grad_input_flops=2 * macs if needs_input_grad else 0,
        grad_weight_flops=2 * macs,
        elementwise_flops=2 * out + activation,
        activation_elements=out,
    )


def _quantizer_cost(info: LayerInfo) -> LayerCost:
    """A VQ bottleneck's two products per image (:func:`vaebench.model.loss.vq_terms`), ``N`` positions, ``K`` codes of
    ``D``: the distances ``v @ E^T`` and the lookup ``one_hot @ E``, ``N K D`` MACs each. Backward, only the lookup's
    gradient to the codebook is a product (``one_hot^T @ dE``): the distances feed an ``argmin``, which has no
    gradient, and the straight-through estimator hands the encoder the decoder's gradient as it is."""
    n, d = _prod(info.in_shape[:-1]), info.in_shape[-1]
    lookup = n * info.layer.codes * d  # type: ignore[union-attr]
    return LayerCost(
        name=info.name,
        kind="quantizer",
        in_shape=tuple(info.in_shape),
        out_shape=tuple(info.out_shape),
        params=sum(_prod(p) for p in info.param_shapes.values()),
        macs=2 * lookup,
        valid_macs=2 * lookup,
        forward_flops=4 * lookup,
        grad_input_flops=0,
        grad_weight_flops=2 * lookup,
        elementwise_flops=0,
        activation_elements=n * d,
    )


def layer_costs(spec: ModelSpec) -> list[LayerCost]:
    """Every dense and convolution layer's cost, in :meth:`ModelSpec.layers` order."""
    out = []
    first = True  # layers before the first parametric one only reshape the image
    for info in spec.layers():
        if first and info.name.startswith("encoder/") and info.param_shapes:
            cost, first = layer_cost(info, needs_input_grad=False), False
        else:
            cost = layer_cost(info)
        if cost is not None:
            out.append(cost)
    return out


def model_costs(spec: ModelSpec, batch_size: int) -> dict[str, Any]:
    """Per-layer and total work of one training step of ``spec`` (on its objective), per image, at ``batch_size``.

    A layer row's own figures are one pass (one image through it once); its
    ``passes`` says how often the step runs it per image, and the totals weight
    each row by it (:func:`passes`).

    The batch size matters only for Adam, whose work is per step: per image it
    is ``ADAM_FLOPS_PER_PARAM * params / batch_size``. Returns a JSON-ready dict
    with ``convention``, ``layers`` and ``total``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    layers = layer_costs(spec)
    k = passes(spec)
    runs = {c.name: passes(spec, c.name) for c in layers}
    pixels = _prod(tuple(spec.input_shape))
    params = spec.num_params()
    per_latent = LOSS_FLOPS["reparam_per_latent"] * k
    if spec.quantizer is not None:
        entries = _prod(spec.latent_shape)
        loss = LOSS_FLOPS["mse_per_pixel"] * pixels + LOSS_FLOPS["vq_per_latent"] * entries
    elif spec.objective.name == "iwae":
        per_latent += LOSS_FLOPS["iwae_log_w_per_latent"] * k
        loss = LOSS_FLOPS["bce_per_pixel"] * pixels * k + per_latent * spec.latent_dim + LOSS_FLOPS["iwae_per_sample"] * k
    else:
        per_latent += LOSS_FLOPS["kl_per_latent"]
        loss = LOSS_FLOPS["bce_per_pixel"] * pixels + per_latent * spec.latent_dim
    adam = ADAM_FLOPS_PER_PARAM * params / batch_size

    def total_of(field: str) -> int:
        return sum(getattr(c, field) * runs[c.name] for c in layers)

    forward, grad_input, grad_weight = (total_of(f) for f in ("forward_flops", "grad_input_flops", "grad_weight_flops"))
    elementwise = total_of("elementwise_flops") + loss
    total = {
        "macs": total_of("macs"),
        "valid_macs": total_of("valid_macs"),
        "forward_flops": forward,
        "grad_input_flops": grad_input,
        "grad_weight_flops": grad_weight,
        "matrix_step_flops": forward + grad_input + grad_weight,
        "elementwise_flops": elementwise,
        "optimizer_flops": adam,
        "step_flops": forward + grad_input + grad_weight + elementwise + adam,
        "params": params,
        "param_bytes": BYTES_PER_FLOAT * params,
        "activation_bytes": BYTES_PER_FLOAT * (pixels + total_of("activation_elements")),
        "samples": k,
    }
    rows = []
    for c in layers:
        row = asdict(c)
        row["step_flops"] = c.step_flops
        row["param_bytes"] = BYTES_PER_FLOAT * c.params
        row["passes"] = runs[c.name]
        rows.append(row)
    return {
        "model": spec.name,
        "batch_size": batch_size,
        "per": "image",
        "convention": CONVENTION,
        "layers": rows,
        "total": total,
    }


def passes(spec: ModelSpec, layer: str = "decoder/") -> int:
    """How many times a training step runs ``layer`` (a :meth:`ModelSpec.layers` name) per image: a decoder layer
    ``K`` times under the IWAE bound (the default asks for the decoder), every other layer once."""
    decoder = layer.startswith("decoder/")
    return spec.objective.samples if decoder and spec.objective.name == "iwae" else 1


def step_flops_per_image(spec: ModelSpec, batch_size: int) -> float:
    """All FLOPs of one training step per image (matrix products, elementwise, Adam): the achieved-FLOP/s numerator."""
    return float(model_costs(spec, batch_size)["total"]["step_flops"])
