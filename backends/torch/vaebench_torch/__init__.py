"""PyTorch backend for vaebench: the core's spec and loss translated to ``torch``.

Layout: images arrive channels-last from the core; ``permute(0, 3, 1, 2)`` of
that memory *is* a channels-last NCHW tensor, so the default ``layout=nhwc``
costs no copy and keeps oneDNN on its fast path. Measured on a 2-core CPU for
the ``seed`` network at batch 512, NCHW (``layout=nchw``) trains at ~160
images/s (the allocator maps and unmaps its large activation buffers every
step), channels-last at ~220; at batch 128 both are near 290.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaebench.model.config import AdamConfig
from vaebench.model.layers import Conv2D, Dense, Flatten, LayerInfo, ModelSpec, Reshape
from vaebench.model.layouts import adam_state
from vaebench.model.loss import recon_nll, vae_terms
from vaebench.plugin import engines
from vaebench.plugin.contract import Backend, Model
from vaebench.plugin.environment import Environment


class TorchOps:
    """The contract's :class:`~vaebench.model.ops.Ops` on torch tensors."""

    exp = staticmethod(torch.exp)
    log1p = staticmethod(torch.log1p)
    abs = staticmethod(torch.abs)
    relu = staticmethod(torch.relu)
    mean = staticmethod(torch.mean)

    @staticmethod
    def bce_with_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # One fused kernel of the core's formula (stable, unclipped), forward and backward.
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")

    @staticmethod
    def flatten(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    @staticmethod
    def sum_per_example(x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=-1)


def _module(info: LayerInfo) -> nn.Module | None:
    layer = info.layer
    if isinstance(layer, Dense):
        return nn.Linear(info.in_shape[0], layer.units)
    if isinstance(layer, Conv2D):
        cls = nn.ConvTranspose2d if layer.transpose else nn.Conv2d
        before, after = info.padding
        return cls(info.in_shape[-1], layer.filters, layer.kernel, layer.stride, padding=before if before == after else 0)
    return None


class Net(nn.Module):
    """A chain of spec layers; tensors between them are NCHW (maybe channels-last memory)."""

    def __init__(self, layers: list[LayerInfo]) -> None:
        super().__init__()
        self.infos = layers
        self.mods = nn.ModuleDict({i.key: m for i in layers if (m := _module(i)) is not None})

    def apply_layer(self, info: LayerInfo, x: torch.Tensor) -> torch.Tensor:
        layer = info.layer
        if isinstance(layer, Flatten):
            return x.permute(0, 2, 3, 1).flatten(1) if x.ndim == 4 else x.flatten(1)
        if isinstance(layer, Reshape):
            return x.view(x.shape[0], *layer.shape).permute(0, 3, 1, 2)
        before, after = info.padding
        if isinstance(layer, Conv2D) and before != after and not layer.transpose:
            x = F.pad(x, (before, after, before, after))
        x = self.mods[info.key](x)
        if isinstance(layer, Conv2D) and before != after and layer.transpose:
            x = x[:, :, before : before + info.out_shape[0], before : before + info.out_shape[1]]
        return torch.relu(x) if layer.activation == "relu" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for info in self.infos:
            x = self.apply_layer(info, x)
        return x


class VAE(nn.Module):
    """Encoder trunk, mean/log-variance heads and decoder, built from one spec."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.trunk = Net(spec.encoder_layers())
        self.heads = Net(spec.head_layers())
        self.decoder = Net(spec.decoder_layers())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        mean_info, logvar_info = self.heads.infos
        return self.heads.apply_layer(mean_info, h), self.heads.apply_layer(logvar_info, h)

    def terms(self, x: torch.Tensor, eps: torch.Tensor) -> Any:
        return vae_terms(TorchOps, self.encode, self.decoder, x, eps)

    def loss(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.terms(x, eps).neg_elbo.mean()

    def parameters_by_name(self) -> list[tuple[str, nn.Parameter]]:
        """Every parameter under its canonical name (``<layer>/kernel``, ``<layer>/bias``)."""
        return [
            (f"{i.name}/{name}", param)
            for net in (self.trunk, self.heads, self.decoder)
            for i in net.infos
            if i.key in net.mods
            for name, param in (("kernel", net.mods[i.key].weight), ("bias", net.mods[i.key].bias))
        ]


class TorchModel(Model):
    """A :class:`~vaebench.plugin.contract.Model` running eagerly or under ``torch.compile``."""

    # torch stores Linear as (out, in), Conv2d as (out, in, h, w), ConvTranspose2d as (in, out, h, w)
    layout: ClassVar[dict[str, tuple[int, ...]]] = {"dense": (1, 0), "conv": (3, 2, 0, 1), "conv_transpose": (2, 3, 0, 1)}
    engine = "torch"

    def __init__(self, spec: ModelSpec, adam: AdamConfig, backend: TorchBackend) -> None:
        super().__init__(spec, adam)
        self.device_kind = backend.device_kind
        self.device = torch.device(backend.device_kind)
        self.channels_last = backend.options["layout"] == "nhwc"
        self.net = VAE(spec).to(self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.params = self.net.parameters_by_name()
        self.loss_fn = torch.compile(self.net.loss) if backend.compile else self.net.loss
        self.fused = backend.options["fused_adam"] == "1"
        self._new_optimizer()

    def _new_optimizer(self) -> None:
        a = self.adam
        self.opt = torch.optim.Adam(
            self.net.parameters(),
            lr=a.lr,
            betas=(a.beta1, a.beta2),
            eps=a.eps,
            fused=self.fused or None,
            foreach=None if self.fused else True,
        )

    def _images(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return t if self.channels_last else t.contiguous()

    def _vec(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device, non_blocking=True)

    # -- weights and Adam state (arrays arrive and leave in torch's layout) --
    def _load_weights(self, params: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for key, param in self.params:
                param.copy_(torch.from_numpy(params[key]))
        self._new_optimizer()

    def _export_weights(self) -> dict[str, np.ndarray]:
        return {key: param.detach().cpu().numpy() for key, param in self.params}

    def _export_optimizer_state(self) -> dict[str, np.ndarray]:
        states = [(key, param, self.opt.state.get(param) or {}) for key, param in self.params]
        step = next((float(st["step"]) for _, _, st in states if "step" in st), 0.0)

        def host(st: dict, name: str, param: nn.Parameter) -> np.ndarray:
            return st[name].detach().cpu().numpy() if name in st else np.zeros(tuple(param.shape), np.float32)

        return adam_state(step, ((k, host(st, "exp_avg", p), host(st, "exp_avg_sq", p)) for k, p, st in states))

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self._new_optimizer()
        for key, param in self.params:
            # empty_like keeps the parameter's memory format (channels-last), as the fused kernel expects
            m, v = (torch.empty_like(param).copy_(torch.from_numpy(state[f"{key}/{s}"])) for s in ("m", "v"))
            step = torch.tensor(float(state["step"]), dtype=torch.float32, device=param.device if self.fused else "cpu")
            self.opt.state[param] = {"step": step, "exp_avg": m, "exp_avg_sq": v}

    def _train_step(self, x: np.ndarray, eps: np.ndarray) -> torch.Tensor:
        loss = self.loss_fn(self._images(x), self._vec(eps))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def _fetch(self, values: Sequence[torch.Tensor]) -> np.ndarray:
        return torch.stack(list(values)).cpu().numpy()

    @torch.inference_mode()
    def _evaluate(self, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(t.cpu().numpy() for t in self.net.terms(self._images(x), self._vec(eps)))

    @torch.inference_mode()
    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, logvar = self.net.encode(self._images(x))
        return mean.cpu().numpy(), logvar.cpu().numpy()

    @torch.inference_mode()
    def _decode(self, z: np.ndarray) -> np.ndarray:
        return torch.sigmoid(self.net.decoder(self._vec(z))).permute(0, 2, 3, 1).cpu().numpy()

    @torch.inference_mode()
    def _recon_nll(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return recon_nll(TorchOps, self.net.decoder(self._vec(z)), self._images(x)).cpu().numpy()

    def _synchronize(self) -> None:
        if self.device_kind == "cuda":
            torch.cuda.synchronize(self.device)


class TorchBackend(Backend):
    """PyTorch. Options: ``layout`` (``nhwc``: channels-last memory, or ``nchw``),
    ``fused_adam`` (``1``: the single-kernel Adam, or ``0``: foreach). Precision is
    the core's ``--precision`` (``fp32``: TF32 off, as the kit's tolerances assume)."""

    name = "torch"
    option_defaults: ClassVar[dict[str, str]] = {"layout": "nhwc", "fused_adam": "1"}
    option_values: ClassVar[dict[str, tuple[str, ...]]] = {"layout": ("nhwc", "nchw"), "fused_adam": ("1", "0")}
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {"compile": ("0", "1"), "layout": ("nhwc", "nchw")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device_kind = engines.resolve_device(self.device, "torch", f"torch {torch.__version__}")
        engines.configure("torch", self.threads, self.precision)

    def _environment(self) -> Environment:
        return Environment(
            framework="torch",
            versions={"torch": torch.__version__, "cuda": str(torch.version.cuda)},
            device=self.device_kind,
            device_name=engines.device_name("torch", self.device_kind),
            threads=engines.threads("torch", self.threads),
            precision=self.precision,
            float32_matmul_precision=engines.matmul_precision("torch"),
            execution="torch.compile" if self.compile else "eager",
            extra={
                "interop_threads": torch.get_num_interop_threads(),
                "mkldnn": torch.backends.mkldnn.is_available(),
                "layout": self.options["layout"],
                "fused_adam": self.options["fused_adam"] == "1",
            },
        )

    def build(self, spec: ModelSpec, adam: AdamConfig) -> TorchModel:
        return TorchModel(spec, adam, self)
