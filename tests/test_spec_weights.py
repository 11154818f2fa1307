import numpy as np
import pytest

from vaebench.errors import ConfigError, ShapeError
from vaebench.model.catalogue import MODELS, get_model
from vaebench.model.config import TrainConfig
from vaebench.model.layers import same_padding
from vaebench.model.weights import check_params, init_params, load_params, save_params


@pytest.mark.parametrize(
    "name, expected",
    [
        # pytorch/examples vae: fc1 784x400, fc21/fc22 400x20, fc3 20x400, fc4 400x784 (+ biases)
        ("mlp", 784 * 400 + 400 + 2 * (400 * 20 + 20) + 20 * 400 + 400 + 400 * 784 + 784),
        # keras.io VAE model summaries: encoder 69,076 and decoder 65,089 parameters
        ("conv", 69_076 + 65_089),
        ("conv-sym", 69_076 + 65_089),  # the same network, another padding rule
        # the blog's network: 4 encoder convs, Dense 32, two heads; Dense 50176, 5 decoder convs
        (
            "blog",
            (9 * 1 * 32 + 32)
            + (9 * 32 * 64 + 64)
            + 2 * (9 * 64 * 64 + 64)
            + (50176 * 32 + 32)
            + 2 * (32 * 2 + 2)
            + (2 * 50176 + 50176)
            + 3 * (9 * 64 * 64 + 64)
            + (9 * 64 * 32 + 32)
            + (9 * 32 + 1),
        ),
    ],
)
def test_parameter_counts_match_the_sources(name, expected):
    assert get_model(name).spec.num_params() == expected


def test_defaults_of_each_source():
    assert {n: (m.spec.latent_dim, m.batch_size, m.epochs) for n, m in MODELS.items()} == {
        "blog": (2, 512, 100),
        "conv": (2, 128, 30),
        "conv-sym": (2, 128, 30),
        "mlp": (20, 128, 10),
        "iwae-mlp": (50, 20, 10),
        "vqvae": (16, 128, 30),  # keras.io's VQ-VAE: 16-dimensional codes, batch 128, 30 epochs
    }


def test_layer_shapes_and_tensorflow_same_padding():
    conv = get_model("conv").spec
    shapes = [(i.name, i.out_shape, i.padding) for i in conv.layers()]
    assert shapes[0] == ("encoder/0", (14, 14, 32), (0, 1))  # TF pads an even stride-2 input after only
    assert ("decoder/2", (14, 14, 64), (0, 1)) in shapes
    assert shapes[-1] == ("decoder/4", (28, 28, 1), (1, 1))
    assert same_padding(28, 3, 1) == (1, 1) and same_padding(7, 3, 2) == (1, 1)
    crops = {i.name: i.crop for i in conv.layers()}
    assert crops["decoder/2"] == (0, 1) and crops["decoder/4"] == (1, 1) and crops["encoder/0"] == (0, 0)


def test_symmetric_padding_is_what_frameworks_compute_natively():
    """conv-sym: pad 1 both sides; a stride-2 transposed 3x3 is ConvTranspose2d(padding=1, output_padding=1)."""
    layers = {i.name: i for i in get_model("conv-sym").spec.layers()}
    assert [layers[n].out_shape for n in ("encoder/0", "encoder/1")] == [(14, 14, 32), (7, 7, 64)]
    assert layers["encoder/0"].padding == layers["encoder/1"].padding == (1, 1)
    up = layers["decoder/2"]
    assert up.out_shape == (14, 14, 64) and up.padding == (1, 1) and up.crop == (1, 0)
    # torch: out = (in-1)*s - 2*padding + k + output_padding
    assert up.output_padding == 1 and (7 - 1) * 2 - 2 * up.crop[0] + 3 + up.output_padding == 14
    assert up.dilated_padding == (1, 2)  # XLA's conv_transpose: k-1-crop
    last = layers["decoder/4"]
    assert last.crop == (1, 1) and last.output_padding == 0
    same = {i.name: i for i in get_model("conv").spec.layers()}["decoder/2"]
    assert same.output_padding is None and same.dilated_padding == (2, 1)  # TF 'same' crops after only


def test_a_padding_rule_that_cannot_keep_the_size_is_refused():
    from vaebench.model.layers import Conv2D, ModelSpec

    with pytest.raises(ConfigError, match="padding must be one of"):
        ModelSpec("x", (Conv2D(4, padding="valid"),), (), 2).encoder_layers()
    with pytest.raises(ConfigError, match="cannot map 28 to 28"):
        ModelSpec("x", (Conv2D(4, kernel=4, padding="symmetric"),), (), 2).encoder_layers()


def test_latent_override_changes_heads_and_decoder_input():
    spec = get_model("mlp").spec.with_latent(5)
    shapes = spec.param_shapes()
    assert shapes["encoder/mean/kernel"] == (400, 5) and shapes["decoder/0/kernel"] == (5, 400)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch-size"),
        ({"latent_dim": 0}, "latent-dim"),
        ({"epochs": -1}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"model": "resnet"}, "unknown model"),
        ({"dataset": "cifar"}, "unknown dataset"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_impossible_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs).resolved()


def test_resolved_config_takes_the_models_defaults():
    cfg = TrainConfig(model="blog").resolved()
    assert (cfg.batch_size, cfg.epochs, cfg.latent_dim) == (512, 100, 2)


def test_the_old_name_seed_still_means_the_blog_network_in_files_and_warns_on_the_command_line(tmp_path):
    """`--model seed` read like `--seed`; it is `blog` now, and what was written as `seed` still reads."""
    import json

    from click.testing import CliRunner

    from vaebench.cli import cli
    from vaebench.report.tables import runs_table
    from vaebench.run.results import config_of, read_metrics

    assert TrainConfig(model="seed").resolved().model == "blog"
    result = CliRunner().invoke(cli, ["sweep", "--backends", "numpy", "--models", "seed,mlp", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "warning: model 'seed' is now called 'blog'" in result.output
    assert result.output.count("numpy-blog-bs512") == 1
    bad = CliRunner().invoke(cli, ["parity", "--model", "resnet"])
    assert bad.exit_code == 2 and "choose one of blog, conv, conv-sym, iwae-mlp, mlp" in bad.output
    (tmp_path / "r").mkdir()
    cfg = {**TrainConfig(model="blog").resolved().to_dict(), "model": "seed"}
    metrics = {"schema_version": 1, "status": "completed", "config": cfg, "history": [], "final": {"test_neg_elbo": 1.0}}
    (tmp_path / "r" / "metrics.json").write_text(json.dumps(metrics))
    assert config_of(read_metrics(tmp_path / "r")).model == "blog"
    assert " blog " in runs_table([(tmp_path / "r", read_metrics(tmp_path / "r"))])[1]


def test_init_is_seeded_glorot_uniform_with_zero_bias():
    spec = get_model("conv").spec
    a, b, c = init_params(spec, 0), init_params(spec, 0), init_params(spec, 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["encoder/0/kernel"], c["encoder/0/kernel"])
    k = a["encoder/1/kernel"]  # (3, 3, 32, 64)
    limit = np.sqrt(6 / (9 * 32 + 9 * 64))
    assert k.dtype == np.float32 and np.abs(k).max() <= limit and np.abs(k).max() > 0.95 * limit
    assert abs(k.std() - limit / np.sqrt(3)) < 0.01 * limit  # variance of U(-l, l) is l^2 / 3
    assert not a["encoder/1/bias"].any()


def test_one_layers_init_does_not_depend_on_the_others():
    a = init_params(get_model("mlp").spec, 0)
    b = init_params(get_model("mlp").spec.with_latent(7), 0)
    assert np.array_equal(a["encoder/1/kernel"], b["encoder/1/kernel"])


def test_save_load_roundtrip_and_shape_checks(tmp_path):
    spec = get_model("mlp").spec
    params = init_params(spec, 3)
    save_params(params, tmp_path / "w.npz")
    loaded = load_params(tmp_path / "w.npz")
    assert all(np.array_equal(loaded[k], params[k]) for k in params)
    check_params(spec, loaded)
    loaded["encoder/1/kernel"] = loaded["encoder/1/kernel"][:, :3]
    with pytest.raises(ShapeError, match="encoder/1/kernel"):
        check_params(spec, loaded)
    with pytest.raises(ShapeError, match="missing"):
        check_params(get_model("conv").spec, params)
