"""Minimal hand-written PyTorch training loops: the yardstick for the torch plugin.

Written the way a PyTorch user would write them, with no vaebench code in the
step: the plugin's throughput is reported as a ratio to these.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class BlogVAE(nn.Module):
    """The blog's network in plain PyTorch (symmetric padding is exact for stride 1)."""

    def __init__(self, latent: int = 2) -> None:
        super().__init__()
        chans = [1, 32, 64, 64, 64]
        self.enc = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(chans))
        self.fc = nn.Linear(28 * 28 * 64, 32)
        self.mean, self.logvar = nn.Linear(32, latent), nn.Linear(32, latent)
        self.dec_fc = nn.Linear(latent, 28 * 28 * 64)
        dchans = [64, 64, 64, 64, 32, 1]
        self.dec = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(dchans))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.enc:
            h = conv(h)
        h = F.relu(self.fc(h.flatten(1)))
        mu, lv = self.mean(h), self.logvar(h)
        z = mu + torch.exp(0.5 * lv) * eps
        h = self.dec_fc(z).view(-1, 64, 28, 28)
        for conv in self.dec:
            h = conv(h)
        bce = F.binary_cross_entropy_with_logits(h, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
        return (bce + kld) / x.shape[0]


class ConvVAE(nn.Module):
    """keras.io's VAE in plain PyTorch: stride-2 convolutions and transposed convolutions (symmetric padding
    gives the same shapes as TensorFlow's 'same', shifted by a pixel, which does not change the cost)."""

    def __init__(self, latent: int = 2) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.fc = nn.Linear(7 * 7 * 64, 16)
        self.mean, self.logvar = nn.Linear(16, latent), nn.Linear(16, latent)
        self.dec_fc = nn.Linear(latent, 7 * 7 * 64)
        self.t1 = nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1)
        self.t2 = nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1)
        self.t3 = nn.ConvTranspose2d(32, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c2(F.relu(self.c1(x))))
        h = F.relu(self.fc(h.flatten(1)))
        mu, lv = self.mean(h), self.logvar(h)
        h = F.relu(self.dec_fc(mu + torch.exp(0.5 * lv) * eps)).view(-1, 64, 7, 7)
        logits = self.t3(F.relu(self.t2(F.relu(self.t1(h)))))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
        return (bce + kld) / x.shape[0]


class MlpVAE(nn.Module):
    """pytorch/examples vae/main.py, loss averaged over the batch."""

    def __init__(self, latent: int = 20) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, latent), nn.Linear(400, latent)
        self.fc3, self.fc4 = nn.Linear(latent, 400), nn.Linear(400, 784)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        h = F.relu(self.fc1(x))
        mu, lv = self.fc21(h), self.fc22(h)
        logits = self.fc4(F.relu(self.fc3(mu + torch.exp(0.5 * lv) * eps)))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
        return (bce + kld) / x.shape[0]


def make_step(model_name: str, batches: list[tuple[Any, Any]], channels_last: bool = True) -> tuple[Any, Any]:
    """``(step, sync)`` for :func:`vaebench.measure.timing.measure`, cycling through ``batches`` (NumPy NHWC ``x, eps``)
    converted to tensors once, up front: the loop's best case, with a new buffer every step as in training."""
    model = {"blog": BlogVAE, "conv": ConvVAE, "mlp": MlpVAE}[model_name]()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def images(x: Any) -> torch.Tensor:
        t = torch.from_numpy(x).permute(0, 3, 1, 2)  # channels-last memory, NCHW shape
        return t if channels_last else t.contiguous()

    data = itertools.cycle([(images(x), torch.from_numpy(eps)) for x, eps in batches])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8, fused=True)

    def step() -> torch.Tensor:
        loss = model(*next(data))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    step.num_params = sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]
    return step, lambda loss: loss.item()
