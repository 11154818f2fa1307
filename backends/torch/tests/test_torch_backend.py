import numpy as np
import pytest

from vaebench.errors import BackendError
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.testing.kit import BackendTests, assert_same_function, perturbed_params, sample_inputs
from vaebench_torch import TorchBackend


class TestTorchConformance(BackendTests):
    @pytest.fixture
    def backend(self):
        return TorchBackend(device="cpu")


class TestTorchSubpixelConformance(BackendTests):
    """``transpose=subpixel`` is a formulation ``--profile best`` may pick: it must pass the whole kit too."""

    @pytest.fixture
    def backend(self):
        return TorchBackend(device="cpu", options={"transpose": "subpixel"})


@pytest.mark.parametrize("name", ["conv", "conv-sym"])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_subpixel_computes_conv_transpose2ds_function_and_gradients(name, layout):
    def make(options):
        return TorchBackend(device="cpu", options={**options, "layout": layout})

    assert_same_function(make, name, {"transpose": "native"}, {"transpose": "subpixel"})


def test_nchw_and_nhwc_layouts_compute_the_same():
    x, eps = sample_inputs(2, n=8)
    outs = []
    for layout in ("nhwc", "nchw"):
        model = TorchBackend(device="cpu", options={"layout": layout}).build(get_model("conv").spec, AdamConfig())
        model.load_weights(perturbed_params("conv"))
        outs.append(model.fetch([model.train_step(x, eps) for _ in range(3)]))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5)


def test_unknown_option_and_missing_cuda_are_clear():
    with pytest.raises(BackendError, match="no option 'layuot'"):
        TorchBackend(options={"layuot": "nhwc"})
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="sees no GPU; use --device cpu"):
            TorchBackend(device="cuda")


def test_the_specs_paddings_are_torchs_own_where_torch_can_say_them():
    """conv-sym is native torch (Conv2d(padding=1), ConvTranspose2d(padding=1, output_padding=1)); conv's TF 'same'
    padding needs an explicit pad before its stride-2 convs and a crop after its stride-2 transposed ones."""
    from torch import nn

    sym = TorchBackend(device="cpu").build(get_model("conv-sym").spec, AdamConfig()).net.built
    assert all(type(m) in (nn.Linear, nn.Conv2d, nn.ConvTranspose2d) for m in sym.values())
    assert sym["encoder/0"].padding == (1, 1) and sym["decoder/2"].output_padding == (1, 1)
    same = TorchBackend(device="cpu").build(get_model("conv").spec, AdamConfig()).net.built
    assert type(same["encoder/0"]) is not nn.Conv2d and type(same["decoder/2"]) is not nn.ConvTranspose2d
    assert type(same["decoder/4"]) is nn.ConvTranspose2d and same["decoder/4"].padding == (1, 1)
