"""The PyTorch side of the plugin (imported by :class:`~vaebench_torch.TorchBackend`).

Tensors between layers are NCHW, on channels-last memory with ``layout=nhwc``:
Flatten permutes to ``(h, w, c)`` order first and Reshape permutes back, as the
spec's flattening order asks. The spec's paddings map onto torch's own where
they can (``Conv2d(padding=p)`` for a symmetric pad, ``ConvTranspose2d(padding,
output_padding)`` for a crop it can say); otherwise an explicit ``F.pad`` or a slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaebench.model.config import AdamConfig
from vaebench.model.layers import LayerInfo, ModelSpec
from vaebench.model.layouts import adam_state
from vaebench.model.loss import recon_nll
from vaebench.model.ops import ArrayOps
from vaebench.model.subpixel import subpixel
from vaebench.plugin import engines, probes, walk
from vaebench.plugin.contract import Model

# the fused BCE is one kernel of the core's formula (stable, unclipped), forward and backward
OPS = ArrayOps(
    torch,
    torch.relu,
    flatten=lambda x: x.flatten(1),
    bce_with_logits=lambda logits, targets: F.binary_cross_entropy_with_logits(logits, targets, reduction="none"),
    one_hot=lambda index, n: F.one_hot(index, n).to(torch.float32),
    stop_gradient=torch.Tensor.detach,
)


class Layers:
    """The spec's layers as ``torch.nn`` modules and functions on NCHW tensors."""

    relu = staticmethod(torch.relu)
    tanh = staticmethod(torch.tanh)

    @staticmethod
    def dense(info: LayerInfo) -> nn.Module:
        return nn.Linear(info.in_shape[0], info.layer.units)

    @staticmethod
    def conv(info: LayerInfo) -> Any:
        layer, (before, after) = info.layer, info.padding
        conv = nn.Conv2d(info.in_shape[-1], layer.filters, layer.kernel, layer.stride, padding=before if before == after else 0)
        if before == after:
            return conv
        return _Padded(conv, lambda x: F.pad(x, (before, after, before, after)))

    def __init__(self, transpose: str = "native") -> None:
        self.transpose = transpose

    def conv_transpose(self, info: LayerInfo) -> Any:
        if self.transpose == "subpixel":
            return _SubPixel(info)
        layer, (before, after), extra = info.layer, info.crop, info.output_padding
        native = before == after or extra is not None
        conv = nn.ConvTranspose2d(
            info.in_shape[-1],
            layer.filters,
            layer.kernel,
            layer.stride,
            padding=before if native else 0,
            output_padding=extra or 0,
        )
        if native:
            return conv
        out = info.out_shape[0]
        return _Cropped(conv, lambda y: y[:, :, before : before + out, before : before + out])

    @staticmethod
    def flatten(info: LayerInfo) -> Any:
        if len(info.in_shape) == 3:
            return lambda x: x.permute(0, 2, 3, 1).flatten(1)
        return lambda x: x.flatten(1)

    @staticmethod
    def reshape(info: LayerInfo) -> Any:
        shape = info.layer.shape
        return lambda x: x.view(x.shape[0], *shape).permute(0, 3, 1, 2)

    @staticmethod
    def codebook(info: LayerInfo) -> nn.Module:
        return _Codebook(info)


class _Codebook(nn.Module):
    """A VQ model's codebook ``(K, D)`` as a module's ``weight``, so the optimizer and the name mapping see it."""

    def __init__(self, info: LayerInfo) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(*info.param_shapes[f"{info.name}/codebook"]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.weight.view_as(self.weight)  # a view, not the leaf: module hooks (FlopCounterMode) need a grad_fn


class _Padded(nn.Module):
    """A convolution reading its input padded first (the spec's asymmetric padding)."""

    def __init__(self, conv: nn.Module, pad: Any) -> None:
        super().__init__()
        self.conv, self.pad, self.weight, self.bias = conv, pad, conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class _Cropped(_Padded):
    """A transposed convolution whose full output is cropped after (a crop torch's arguments cannot say)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pad(self.conv(x))


class _SubPixel(nn.Module):
    """ConvTranspose2d's function as one stride-1 convolution and ``pixel_shuffle`` (:mod:`vaebench.model.subpixel`),
    the kernel kept in ConvTranspose2d's ``(in, out, h, w)`` layout and gathered into the stride-1 one each call."""

    def __init__(self, info: LayerInfo) -> None:
        super().__init__()
        self.form, k = subpixel(info), info.layer.kernel
        self.weight = nn.Parameter(torch.empty(info.in_shape[-1], info.layer.filters, k, k))
        self.bias = nn.Parameter(torch.zeros(info.layer.filters))
        nn.init.xavier_uniform_(self.weight)
        self.register_buffer("index", torch.from_numpy(self.form.kernel_index().reshape(-1)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, (c_in, c_out, k, _) = self.form, self.weight.shape
        n, s, (before, after) = f.window, f.stride, f.padding
        w = F.pad(self.weight.permute(2, 3, 0, 1), (0, 0, 0, 0, 0, 1, 0, 1))  # (k+1, k+1, in, out): tap k reads zeros
        w = w.index_select(0, self.index).view(n, s, k + 1, c_in, c_out).index_select(2, self.index)
        w = w.view(n, s, n, s, c_in, c_out).permute(5, 1, 3, 4, 0, 2).reshape(c_out * s * s, c_in, n, n)
        z = F.conv2d(F.pad(x, (before, after, before, after)), w)  # a negative pad crops
        return F.pixel_shuffle(z, s)[:, :, : f.out, : f.out] + self.bias.view(1, -1, 1, 1)


class TorchModel(Model):
    """A :class:`~vaebench.plugin.contract.Model` running eagerly or under ``torch.compile``."""

    # torch stores Linear as (out, in), Conv2d as (out, in, h, w), ConvTranspose2d as (in, out, h, w)
    layout: ClassVar[dict[str, tuple[int, ...]]] = {"dense": (1, 0), "conv": (3, 2, 0, 1), "conv_transpose": (2, 3, 0, 1)}
    engine = "torch"

    def __init__(self, spec: ModelSpec, adam: AdamConfig, backend: Any) -> None:
        super().__init__(spec, adam)
        self.device_kind = backend.device_kind
        self.device = torch.device(backend.device_kind)
        self._wait = engines.waiter("torch", backend.device_kind)
        self.channels_last = backend.options["layout"] == "nhwc"
        self.layers = Layers(backend.options["transpose"])
        self.net = net = walk.network(spec, self.layers)
        self.modules = nn.ModuleDict({name.replace("/", "_"): m for name, m in net.built.items()}).to(self.device)
        if self.channels_last:
            self.modules.to(memory_format=torch.channels_last)
        self.params = net.parameters(("weight", "bias"))

        def loss(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            return net.loss(OPS, x, eps)

        self.compiled = backend.compile
        self.loss_fn = torch.compile(loss) if backend.compile else loss
        self.fused = backend.options["fused_adam"] == "1"
        self._new_optimizer()

    def _new_optimizer(self) -> None:
        a = self.adam
        self.opt = torch.optim.Adam(
            self.modules.parameters(),
            lr=a.lr,
            betas=(a.beta1, a.beta2),
            eps=a.eps,
            fused=self.fused or None,
            foreach=None if self.fused else True,
        )

    def _images(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return t if self.channels_last else t.contiguous()

    def _put(self, a: np.ndarray) -> torch.Tensor:
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

    # -- the step and inference --
    def _train_step(self, x: np.ndarray, eps: np.ndarray) -> torch.Tensor:
        loss = self.loss_fn(self._images(x), self._put(eps))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def _fetch(self, values: Sequence[torch.Tensor]) -> np.ndarray:
        return torch.stack(list(values)).cpu().numpy()

    @torch.inference_mode()
    def _evaluate(self, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(t.cpu().numpy() for t in self.net.terms(OPS, self._images(x), self._put(eps)))

    @torch.inference_mode()
    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, logvar = self.net.encode(self._images(x))
        return mean.cpu().numpy(), logvar.cpu().numpy()

    @torch.inference_mode()
    def _decode(self, z: np.ndarray) -> np.ndarray:
        return self.net.pixels(OPS, self._put(z)).permute(0, 2, 3, 1).cpu().numpy()

    @torch.inference_mode()
    def _codes(self, x: np.ndarray) -> np.ndarray:
        return self.net.codes(OPS, self._images(x)).cpu().numpy()

    @torch.inference_mode()
    def _recon_nll(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return recon_nll(OPS, self.net.decode(self._put(z)), self._images(x)).cpu().numpy()

    def _synchronize(self) -> None:
        self._wait()

    # -- where the time goes (vaebench explain): the layer or the loss alone, as the step runs it --
    def _layer_probe(self, info: LayerInfo, kernel: np.ndarray, bias: np.ndarray, x: np.ndarray, grad: np.ndarray) -> dict:
        built: dict[str, Any] = {}
        fn, module = walk.layer(self.layers, info, built), built[info.name].to(self.device)
        if self.channels_last and x.ndim == 4:
            module.to(memory_format=torch.channels_last)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(kernel)), module.bias.copy_(torch.from_numpy(bias))
        fn = torch.compile(fn) if self.compiled else fn
        xs, gs = (self._images(a) if a.ndim == 4 else self._put(a) for a in (x, grad))
        return probes.layer("torch", self.device_kind, lambda w, x: fn(x), (module.weight, module.bias), xs, gs)

    def _step_probe(self, x: np.ndarray, eps: np.ndarray) -> dict:
        params, batch = [p for _, p in self.params], (self._images(x), self._put(eps))
        return probes.step("torch", self.device_kind, lambda w, x: self.loss_fn(*x), params, batch)
