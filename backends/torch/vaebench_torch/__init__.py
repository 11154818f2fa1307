"""PyTorch backend for vaebench: the core's spec and loss translated to ``torch``.

Layout: images arrive channels-last from the core; ``permute(0, 3, 1, 2)`` of
that memory *is* a channels-last NCHW tensor, so the default ``layout=nhwc``
costs no copy and keeps oneDNN on its fast path. Measured on a 2-core CPU for
the ``blog`` network at batch 512, NCHW (``layout=nchw``) trains at ~160
images/s (the allocator maps and unmaps its large activation buffers every
step), channels-last at ~220; at batch 128 both are near 290.

This module imports no torch until the backend is constructed (registering a
plugin must not import its framework); :mod:`vaebench_torch.model` does.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vaebench.model.config import AdamConfig
from vaebench.model.layers import ModelSpec
from vaebench.plugin import engines
from vaebench.plugin.contract import Backend, Model
from vaebench.plugin.environment import Environment


class TorchBackend(Backend):
    """PyTorch, eager or under ``torch.compile`` (``--compile``). Options: ``layout`` (``nhwc``:
    channels-last memory, or ``nchw``), ``fused_adam`` (``1``: the single-kernel Adam, or ``0``:
    foreach). Precision is the core's ``--precision`` (``fp32``: TF32 off, as the kit's tolerances assume)."""

    name = "torch"
    #: ``transpose``: ``native`` (ConvTranspose2d, cropped after where its arguments cannot say the spec's crop)
    #: or ``subpixel`` (one stride-1 conv and pixel_shuffle, :mod:`vaebench.model.subpixel`): the same function
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "layout": ("nhwc", "nchw"),
        "fused_adam": ("1", "0"),
        "transpose": ("native", "subpixel"),
    }
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {
        "compile": ("0", "1"),
        "layout": ("nhwc", "nchw"),
        "transpose": ("native", "subpixel"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from vaebench_torch import model

        self._impl = model
        self.device_kind = engines.setup("torch", self, f"torch {model.torch.__version__}")

    def _environment(self) -> Environment:
        torch = self._impl.torch
        return engines.environment(
            "torch",
            self,
            framework="torch",
            execution="torch.compile" if self.compile else "eager",
            versions={"cuda": str(torch.version.cuda)},
            extra={
                "interop_threads": torch.get_num_interop_threads(),
                "mkldnn": torch.backends.mkldnn.is_available(),
                "fused_adam": self.options["fused_adam"] == "1",
            },
        )

    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        return self._impl.TorchModel(spec, adam, self)
