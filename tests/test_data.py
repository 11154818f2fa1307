import gzip
import io
import typing
import urllib.error

import numpy as np
import pytest

from vaebench.errors import DataError
from vaebench.io import datasets as data
from vaebench.io.datasets import FILES, load_dataset, locate, read_idx
from vaebench.model.batches import eval_batches, train_batches
from vaebench.testing import idx_bytes, make_tiny_dataset, write_idx


def test_read_idx_roundtrip_gzip_and_raw(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(3, 28, 28)
    for compress in (True, False):
        path = write_idx(tmp_path / f"x{compress}", images, compress)
        got, digest = read_idx(path, 3, (28, 28))
        assert np.array_equal(got, images) and got.dtype == np.uint8
        assert len(digest) == 64


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[: len(b) - 10], "truncated"),
        (lambda b: b[:6], "header cut short"),
        (lambda b: b"\x00\x00\x09\x03" + b[4:], "bad magic"),
        (lambda b: b"\x00\x00\x08\x01" + b[4:], "bad magic"),
        (lambda b: b + b"\x00", "bytes after"),
        (lambda b: b[:4] + (5).to_bytes(4, "big") + b[8:], "truncated"),
        (lambda b: b[:8] + (27).to_bytes(4, "big") + b[12:], "shape"),
        (lambda b: b[:4] + (4_000_000_000).to_bytes(4, "big") + b[8:], "more than"),
    ],
    ids=["truncated", "short-header", "bad-type", "bad-ndim", "trailing", "wrong-count", "wrong-shape", "huge-count"],
)
def test_read_idx_rejects_bad_files(tmp_path, mutate, message):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(mutate(idx_bytes(np.zeros((2, 28, 28), np.uint8)))))
    with pytest.raises(DataError, match=message) as info:
        read_idx(path, 3, (28, 28))
    assert str(path) in str(info.value)


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))[:-30])
    with pytest.raises(DataError, match="broken.gz"):
        read_idx(path, 3, (28, 28))


def test_label_count_mismatch_is_reported(tmp_path):
    folder = make_tiny_dataset(tmp_path / "d", n_train=20, n_test=10)
    write_idx(folder / f"{FILES['train_labels']}.gz", np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="19 labels for 20 images"):
        load_dataset("mnist", folder)


def test_search_order_data_dir_env_cache_system(tmp_path, monkeypatch):
    a = make_tiny_dataset(tmp_path / "a", 16, 8, seed=1)
    b = make_tiny_dataset(tmp_path / "b", 16, 8, seed=2)
    cache = make_tiny_dataset(data.cache_dir("mnist"), 16, 8, seed=3)
    system = make_tiny_dataset(tmp_path / "system" / "fashion-mnist", 16, 8, seed=4)
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("VAEBENCH_DATA_DIR", str(b))
    assert locate("mnist", a)["train_images"].parent == a
    assert locate("mnist", None)["train_images"].parent == b
    monkeypatch.delenv("VAEBENCH_DATA_DIR")
    assert locate("mnist", None)["train_images"].parent == cache
    assert locate("fashion-mnist", None)["train_images"].parent == system


def test_data_dir_may_hold_a_dataset_subfolder(tmp_path):
    make_tiny_dataset(tmp_path / "root" / "mnist", 16, 8)
    assert locate("mnist", tmp_path / "root")["test_labels"].parent == tmp_path / "root" / "mnist"


def test_named_folder_without_files_is_an_error_not_a_fallthrough(tmp_path):
    make_tiny_dataset(data.cache_dir("mnist"), 16, 8)
    with pytest.raises(DataError, match="--data-dir .* has no mnist files"):
        locate("mnist", tmp_path / "empty")


def test_offline_download_fails_with_advice(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    with pytest.raises(DataError, match="offline.*--data-dir"):
        locate("mnist", None)


class _Response(io.BytesIO):
    headers: typing.ClassVar[dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_checks_sha256_and_writes_the_cache(tmp_path, monkeypatch):
    source = make_tiny_dataset(tmp_path / "mirror", 16, 8)
    served = {f"{stem}.gz": (source / f"{stem}.gz").read_bytes() for stem in FILES.values()}
    digests = {key: read_idx(source / f"{stem}.gz", 3 if "images" in key else 1)[1] for key, stem in FILES.items()}
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        if url.startswith(data.MIRRORS["mnist"][0]):
            return _Response(gzip.compress(b"garbage"))  # first mirror serves a wrong file
        return _Response(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setitem(data.SHA256, "mnist", digests)
    files = locate("mnist", None)
    assert files["train_images"].parent == data.cache_dir("mnist")
    assert len(calls) == 8  # every file: first mirror rejected by checksum, second accepted
    assert load_dataset("mnist").canonical


def test_batches_are_seeded_uint8_and_drop_the_partial_batch():
    images = np.random.default_rng(0).integers(0, 256, (70, 28, 28), dtype=np.uint8)
    a = list(train_batches(images, 32, 3, seed=5, epoch=1, dynamic_binarize=True))
    b = list(train_batches(images, 32, 3, seed=5, epoch=1, dynamic_binarize=True))
    c = list(train_batches(images, 32, 3, seed=5, epoch=2, dynamic_binarize=True))
    assert len(a) == 2
    assert all(np.array_equal(x.x, y.x) and np.array_equal(x.eps, y.eps) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].x, c[0].x)
    assert a[0].x.dtype == np.float32 and a[0].x.shape == (32, 28, 28, 1) and a[0].eps.shape == (32, 3)
    assert set(np.unique(a[0].x)) <= {0.0, 1.0}
    plain = next(iter(train_batches(images, 32, 3, seed=5, epoch=1)))
    assert plain.x.max() <= 1.0 and len(np.unique(plain.x)) > 2


def test_eval_batches_cover_the_test_set_in_order():
    images = np.random.default_rng(0).integers(0, 256, (25, 28, 28), dtype=np.uint8)
    batches = list(eval_batches(images, 10, 2, seed=0))
    assert [len(b.x) for b in batches] == [10, 10, 5]
    assert np.allclose(np.concatenate([b.x for b in batches])[..., 0], images / 255)


def test_real_mnist_loads_and_is_canonical(mnist_dir):
    ds = load_dataset("mnist", mnist_dir)
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert ds.train_images.dtype == np.uint8
    assert ds.canonical
    assert np.bincount(ds.test_labels).tolist()[:3] == [980, 1135, 1032]
