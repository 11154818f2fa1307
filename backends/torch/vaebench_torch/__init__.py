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

from vaebench.contract import Backend, Model
from vaebench.environment import cpu_model
from vaebench.errors import BackendError
from vaebench.loss import recon_nll, vae_terms
from vaebench.spec import AdamConfig, Conv2D, Dense, Flatten, LayerInfo, ModelSpec, Reshape


class TorchOps:
    """The contract's :class:`~vaebench.contract.Ops` on torch tensors."""

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


def _to_torch(info: LayerInfo, kernel: np.ndarray) -> np.ndarray:
    """Canonical kernel -> torch weight layout (the one place layouts are converted)."""
    if isinstance(info.layer, Dense):
        return kernel.T  # (in, out) -> (out, in)
    return kernel.transpose((2, 3, 0, 1) if info.layer.transpose else (3, 2, 0, 1))


def _from_torch(info: LayerInfo, weight: np.ndarray) -> np.ndarray:
    if isinstance(info.layer, Dense):
        return weight.T
    return weight.transpose((2, 3, 0, 1) if info.layer.transpose else (2, 3, 1, 0))


class Net(nn.Module):
    """A chain of spec layers; tensors between them are NCHW (maybe channels-last memory)."""

    def __init__(self, layers: list[LayerInfo]) -> None:
        super().__init__()
        self.infos = layers
        self.mods = nn.ModuleDict({i.name.replace("/", "_"): m for i in layers if (m := _module(i)) is not None})

    def apply_layer(self, info: LayerInfo, x: torch.Tensor) -> torch.Tensor:
        layer = info.layer
        if isinstance(layer, Flatten):
            return x.permute(0, 2, 3, 1).flatten(1) if x.ndim == 4 else x.flatten(1)
        if isinstance(layer, Reshape):
            return x.view(x.shape[0], *layer.shape).permute(0, 3, 1, 2)
        before, after = info.padding
        if isinstance(layer, Conv2D) and before != after and not layer.transpose:
            x = F.pad(x, (before, after, before, after))
        x = self.mods[info.name.replace("/", "_")](x)
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
        return vae_terms(TorchBackend.ops, self.encode, self.decoder, x, eps)

    def loss(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.terms(x, eps).neg_elbo.mean()

    def named_layers(self) -> list[tuple[LayerInfo, nn.Module]]:
        return [
            (i, net.mods[i.name.replace("/", "_")])
            for net in (self.trunk, self.heads, self.decoder)
            for i in net.infos
            if i.name.replace("/", "_") in net.mods
        ]


class TorchModel(Model):
    """A :class:`~vaebench.contract.Model` running eagerly or under ``torch.compile``."""

    def __init__(self, spec: ModelSpec, adam: AdamConfig, backend: TorchBackend) -> None:
        super().__init__(spec, adam)
        self.device = backend.torch_device
        self.channels_last = backend.options["layout"] == "nhwc"
        self.net = VAE(spec).to(self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
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

    def _load_weights(self, params: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for info, mod in self.net.named_layers():
                w = torch.from_numpy(np.ascontiguousarray(_to_torch(info, params[f"{info.name}/kernel"])))
                mod.weight.copy_(w)
                mod.bias.copy_(torch.from_numpy(params[f"{info.name}/bias"]))
        self._new_optimizer()

    def _export_weights(self) -> dict[str, np.ndarray]:
        out = {}
        for info, mod in self.net.named_layers():
            out[f"{info.name}/kernel"] = np.ascontiguousarray(_from_torch(info, mod.weight.detach().cpu().numpy()))
            out[f"{info.name}/bias"] = mod.bias.detach().cpu().numpy().copy()
        return out

    def _params(self) -> list[tuple[str, LayerInfo, nn.Parameter]]:
        return [
            (f"{i.name}/{n}", i, p) for i, mod in self.net.named_layers() for n, p in (("kernel", mod.weight), ("bias", mod.bias))
        ]

    def _export_optimizer_state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"step": np.zeros((), np.float32)}
        for key, info, param in self._params():
            st = self.opt.state.get(param) or {}
            convert = (lambda a, info=info: _from_torch(info, a)) if key.endswith("kernel") else (lambda a: a)
            for ours, theirs in (("m", "exp_avg"), ("v", "exp_avg_sq")):
                value = st[theirs].detach().cpu().numpy() if theirs in st else np.zeros(tuple(param.shape), np.float32)
                out[f"{key}/{ours}"] = np.array(convert(value), order="C")  # a copy: never alias live state
            if "step" in st:
                out["step"] = np.asarray(float(st["step"]), np.float32)
        return out

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self._new_optimizer()
        for key, info, param in self._params():
            convert = (lambda a, info=info: _to_torch(info, a)) if key.endswith("kernel") else (lambda a: a)
            moments = {
                t: torch.tensor(np.ascontiguousarray(convert(state[f"{key}/{o}"])), device=param.device)
                for o, t in (("m", "exp_avg"), ("v", "exp_avg_sq"))
            }
            moments = {
                t: m.contiguous(memory_format=torch.channels_last) if param.dim() == 4 and self.channels_last else m
                for t, m in moments.items()
            }
            step = torch.tensor(float(state["step"]), dtype=torch.float32, device=param.device if self.fused else "cpu")
            self.opt.state[param] = {"step": step, **moments}

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
        return recon_nll(TorchBackend.ops, self.net.decoder(self._vec(z)), self._images(x)).cpu().numpy()

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _peak_device_memory_mb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None


class TorchBackend(Backend):
    """PyTorch. Options: ``layout`` (``nhwc``: channels-last memory, or ``nchw``),
    ``fused_adam`` (``1``: the single-kernel Adam, or ``0``: foreach). Precision is
    the core's ``--precision`` (``fp32``: TF32 off, as the kit's tolerances assume)."""

    name = "torch"
    framework = "torch"
    ops = TorchOps()
    option_defaults: ClassVar[dict[str, str]] = {"layout": "nhwc", "fused_adam": "1"}
    option_values: ClassVar[dict[str, tuple[str, ...]]] = {"layout": ("nhwc", "nchw"), "fused_adam": ("1", "0")}
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {"compile": ("0", "1"), "layout": ("nhwc", "nchw")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"--device cuda asked for, but torch {torch.__version__} sees no CUDA device; use --device cpu")
        kind = "cuda" if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.torch_device = torch.device(kind)
        if self.threads:
            torch.set_num_threads(self.threads)
        tf32 = self.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32

    def environment(self) -> dict[str, Any]:
        cuda = self.torch_device.type == "cuda"
        return {
            "framework": "torch",
            "torch": torch.__version__,
            "device": self.torch_device.type,
            "device_name": torch.cuda.get_device_name(self.torch_device) if cuda else cpu_model(),
            "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "precision": self.precision,
            "mkldnn": torch.backends.mkldnn.is_available(),
            "execution": "torch.compile" if self.compile else "eager",
            "layout": self.options["layout"],
            "fused_adam": self.options["fused_adam"] == "1",
        }

    def build(self, spec: ModelSpec, adam: AdamConfig) -> TorchModel:
        return TorchModel(spec, adam, self)
