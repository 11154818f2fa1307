"""Minimal hand-written PyTorch training loops: the yardstick for the torch plugin.

Written the way a PyTorch user would write them, with no vaebench code in the
step: the plugin's throughput is reported as a ratio to these. Each computes
exactly the plugin's function (TF 'same' padding for ``conv``, (h, w, c)
flattening), which tests/test_yardstick_loops.py checks with shared weights.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


def _flatten_hwc(h: torch.Tensor) -> torch.Tensor:
    """Flatten in (h, w, c) order, as Keras (and so the spec) does: a free view on channels-last memory."""
    return h.permute(0, 2, 3, 1).flatten(1)


def _unflatten_hwc(h: torch.Tensor, hw: int, c: int) -> torch.Tensor:
    return h.view(-1, hw, hw, c).permute(0, 3, 1, 2)


def _loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, x.reshape(logits.shape), reduction="sum")
    kld = -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
    return (bce + kld) / x.shape[0]


class BlogVAE(nn.Module):
    """The blog's network in plain PyTorch (symmetric padding is TF's 'same' for stride 1)."""

    # canonical spec layer -> attribute, so the equivalence test can load the suite's weights
    names: ClassVar[dict[str, str]] = {
        **{f"encoder/{i}": f"enc.{i}" for i in range(4)},
        "encoder/5": "fc",
        "encoder/mean": "mean",
        "encoder/logvar": "logvar",
        "decoder/0": "dec_fc",
        **{f"decoder/{i + 2}": f"dec.{i}" for i in range(5)},
    }

    def __init__(self, latent: int = 2) -> None:
        super().__init__()
        chans = [1, 32, 64, 64, 64]
        self.enc = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(chans))
        self.fc = nn.Linear(28 * 28 * 64, 32)
        self.mean, self.logvar = nn.Linear(32, latent), nn.Linear(32, latent)
        self.dec_fc = nn.Linear(latent, 28 * 28 * 64)
        dchans = [64, 64, 64, 64, 32, 1]
        self.dec = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(dchans))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for conv in self.enc:
            h = conv(h)
        h = F.relu(self.fc(_flatten_hwc(h)))
        return self.mean(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = _unflatten_hwc(self.dec_fc(z), 28, 64)
        for conv in self.dec:
            h = conv(h)
        return h

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mu, lv = self.encode(x)
        return _loss(self.decode(mu + torch.exp(0.5 * lv) * eps), x, mu, lv)


class ConvVAE(nn.Module):
    """keras.io's VAE in plain PyTorch: stride-2 convolutions and transposed convolutions.

    ``same=True`` (model ``conv``) computes TensorFlow's 'same' exactly, as the plugin does: pad (0, 1)
    before each stride-2 convolution; compute each stride-2 transposed convolution in full and keep its
    first ``2 * in`` pixels. ``same=False`` (model ``conv-sym``) is the symmetric network torch computes
    natively (``padding=1``, ``output_padding=1``): a pixel-shifted, different function.
    """

    names: ClassVar[dict[str, str]] = {
        "encoder/0": "c1",
        "encoder/1": "c2",
        "encoder/3": "fc",
        "encoder/mean": "mean",
        "encoder/logvar": "logvar",
        "decoder/0": "dec_fc",
        "decoder/2": "t1",
        "decoder/3": "t2",
        "decoder/4": "t3",
    }

    def __init__(self, latent: int = 2, same: bool = True) -> None:
        super().__init__()
        self.same = same
        pad, out_pad = (0, 0) if same else (1, 1)
        self.c1, self.c2 = nn.Conv2d(1, 32, 3, stride=2, padding=pad), nn.Conv2d(32, 64, 3, stride=2, padding=pad)
        self.fc = nn.Linear(7 * 7 * 64, 16)
        self.mean, self.logvar = nn.Linear(16, latent), nn.Linear(16, latent)
        self.dec_fc = nn.Linear(latent, 7 * 7 * 64)
        self.t1 = nn.ConvTranspose2d(64, 64, 3, stride=2, padding=pad, output_padding=out_pad)
        self.t2 = nn.ConvTranspose2d(64, 32, 3, stride=2, padding=pad, output_padding=out_pad)
        self.t3 = nn.ConvTranspose2d(32, 1, 3, padding=1)

    def _down(self, conv: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return F.relu(conv(F.pad(h, (0, 1, 0, 1)) if self.same else h))

    def _up(self, conv: nn.Module, h: torch.Tensor) -> torch.Tensor:
        out = 2 * h.shape[-1]
        y = conv(h)
        return F.relu(y[:, :, :out, :out] if self.same else y)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._down(self.c2, self._down(self.c1, x))
        h = F.relu(self.fc(_flatten_hwc(h)))
        return self.mean(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = _unflatten_hwc(F.relu(self.dec_fc(z)), 7, 64)
        return self.t3(self._up(self.t2, self._up(self.t1, h)))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mu, lv = self.encode(x)
        return _loss(self.decode(mu + torch.exp(0.5 * lv) * eps), x, mu, lv)


class MlpVAE(nn.Module):
    """pytorch/examples vae/main.py, loss averaged over the batch."""

    names: ClassVar[dict[str, str]] = {
        "encoder/1": "fc1",
        "encoder/mean": "fc21",
        "encoder/logvar": "fc22",
        "decoder/0": "fc3",
        "decoder/1": "fc4",
    }

    def __init__(self, latent: int = 20) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, latent), nn.Linear(400, latent)
        self.fc3, self.fc4 = nn.Linear(latent, 400), nn.Linear(400, 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.flatten(1)))
        return self.fc21(h), self.fc22(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc4(F.relu(self.fc3(z)))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mu, lv = self.encode(x)
        return _loss(self.decode(mu + torch.exp(0.5 * lv) * eps), x.flatten(1), mu, lv)


class IwaeMlpVAE(nn.Module):
    """Burda et al.'s one-stochastic-layer network: 784-200-200-50, tanh."""

    names: ClassVar[dict[str, str]] = {
        "encoder/1": "enc1",
        "encoder/2": "enc2",
        "encoder/mean": "mean",
        "encoder/logvar": "logvar",
        "decoder/0": "dec0",
        "decoder/1": "dec1",
        "decoder/2": "dec2",
    }

    def __init__(self, latent: int = 50) -> None:
        super().__init__()
        self.enc1, self.enc2 = nn.Linear(784, 200), nn.Linear(200, 200)
        self.mean, self.logvar = nn.Linear(200, latent), nn.Linear(200, latent)
        self.dec0, self.dec1, self.dec2 = nn.Linear(latent, 200), nn.Linear(200, 200), nn.Linear(200, 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.enc2(torch.tanh(self.enc1(x.flatten(1)))))
        return self.mean(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec2(torch.tanh(self.dec1(torch.tanh(self.dec0(z)))))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mu, lv = self.encode(x)
        return _loss(self.decode(mu + torch.exp(0.5 * lv) * eps), x.flatten(1), mu, lv)


def build(model_name: str) -> nn.Module:
    """The named network (``conv`` with TF 'same' padding, ``conv-sym`` with torch's symmetric padding)."""
    models = {"blog": BlogVAE, "conv": ConvVAE, "conv-sym": partial(ConvVAE, same=False), "mlp": MlpVAE, "iwae-mlp": IwaeMlpVAE}
    return models[model_name]()


def load_canonical(model: nn.Module, params: dict[str, Any]) -> None:
    """Copy the suite's canonical weights (kernels ``(in, out)`` / ``(kh, kw, in, out)``) into ``model``."""
    with torch.no_grad():
        for name, attr in model.names.items():
            mod = model.get_submodule(attr)
            k = torch.from_numpy(params[f"{name}/kernel"])
            if isinstance(mod, nn.Linear):
                k = k.T
            elif isinstance(mod, nn.ConvTranspose2d):
                k = k.permute(2, 3, 0, 1)
            else:
                k = k.permute(3, 2, 0, 1)
            mod.weight.copy_(k)
            mod.bias.copy_(torch.from_numpy(params[f"{name}/bias"]))


def canonical_grads(model: nn.Module) -> dict[str, Any]:
    """``model``'s gradients under canonical names and layouts (NumPy)."""
    out = {}
    for name, attr in model.names.items():
        mod = model.get_submodule(attr)
        g = mod.weight.grad
        if isinstance(mod, nn.Linear):
            g = g.T
        elif isinstance(mod, nn.ConvTranspose2d):
            g = g.permute(2, 3, 0, 1)
        else:
            g = g.permute(2, 3, 1, 0)
        out[f"{name}/kernel"] = g.contiguous().numpy()
        out[f"{name}/bias"] = mod.bias.grad.numpy()
    return out


def make_step(
    model_name: str,
    batches: list[tuple[Any, Any]],
    channels_last: bool = True,
    params: dict[str, Any] | None = None,
    compile: bool = False,
) -> tuple[Any, Any]:
    """``(step, sync)`` cycling through ``batches`` (NumPy NHWC ``x, eps``) converted to tensors once, up front: the
    loop's best case, with a new buffer every step as in training. ``params`` (canonical names and layouts) are the
    starting weights, so plugin and yardstick train from the same point; without them, PyTorch's init. ``compile``:
    the forward pass and loss under ``torch.compile`` (the module compiled, as a torch user writes it)."""
    model = build(model_name)
    if params is not None:
        load_canonical(model, params)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def images(x: Any) -> torch.Tensor:
        t = torch.from_numpy(x).permute(0, 3, 1, 2)  # channels-last memory, NCHW shape
        return t if channels_last else t.contiguous()

    data = itertools.cycle([(images(x), torch.from_numpy(eps)) for x, eps in batches])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8, fused=True)
    forward = torch.compile(model) if compile else model

    def step() -> torch.Tensor:
        loss = forward(*next(data))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    step.num_params = sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]
    return step, lambda loss: loss.item()
