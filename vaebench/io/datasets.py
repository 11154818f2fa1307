"""MNIST and Fashion-MNIST from the four standard IDX files: where they are found, read and checked.

Where the files are looked for, in order:

1. ``--data-dir`` (the folder itself or its ``<dataset>/`` subfolder);
2. ``$VAEBENCH_DATA_DIR`` (likewise);
3. the user cache, ``platformdirs.user_cache_dir("vaebench")/<dataset>``;
4. ``/usr/share/datasets/<dataset>`` (Debian's ``dataset-fashion-mnist``);
5. a download from the public mirrors into the cache, each file checked
   against the SHA-256 of its *uncompressed* bytes (mirrors re-compress files,
   so the ``.gz`` digests differ between them while the content does not).

A folder named by 1 or 2 that lacks the files is an error rather than a reason
to look further: the user asked for that folder. Images stay in memory as
uint8 (47 MB for MNIST's training set); each batch is converted to float32 on
its own, so a run never holds the data set as float32 (188 MB).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaebench.errors import DataError
from vaebench.io.fileio import atomic_write_bytes

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
}

# SHA-256 of the uncompressed IDX bytes.
SHA256 = {
    "mnist": {
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

SYSTEM_DIR = Path("/usr/share/datasets")
MAX_ITEMS = 1_000_000  # MNIST-like sets hold 10k-814k items (EMNIST byclass the most); bounds what a header can claim
MAX_INFLATION = 64  # real image IDX files inflate 3-6x from gzip; more than this is a decompression bomb
_CHUNK = 1 << 20


def _fix(path: Path) -> str:
    """What to do about a bad file: only a file in vaebench's own cache is vaebench's to download again."""
    if Path(path).parent.name in MIRRORS and Path(path).parent == cache_dir(Path(path).parent.name):
        return "delete it and vaebench will download it again"
    return "replace it with a good copy of the data set"


def read_idx(path: Path, ndim: int, item_shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, str]:
    """Read an IDX file of unsigned bytes (gzip-compressed or not).

    Returns the array and the SHA-256 of the uncompressed bytes. Checks the
    magic number (``0x0000 08 ndim``), the item shape, and that the payload has
    exactly the bytes the header declares, reading in chunks so a header that
    claims more than the file holds never allocates the claim. The claim itself
    is bounded before anything is read: by :data:`MAX_ITEMS`, by the file's size
    for a plain file, and by :data:`MAX_INFLATION` times it for a gzip one, and
    decompression stops at the declared size plus one byte.
    """
    fix = _fix(path)
    try:
        on_disk = os.path.getsize(path)
        with _open(path) as fh:
            digest = hashlib.sha256()
            header = fh.read(4 + 4 * ndim)
            digest.update(header)
            if len(header) < 4 or header[:2] != b"\0\0" or header[2] != 0x08 or header[3] != ndim:
                raise DataError(f"{path} is not an IDX file of {ndim}-d unsigned bytes (bad magic number); {fix}")
            if len(header) < 4 + 4 * ndim:
                raise DataError(f"{path} is truncated (header cut short); {fix}")
            dims = struct.unpack(f">{ndim}I", header[4:])
            if item_shape is not None and tuple(dims[1:]) != item_shape:
                raise DataError(f"{path} holds items of shape {tuple(dims[1:])}, expected {item_shape}; {fix}")
            size = int(np.prod(dims, dtype=np.int64))
            if dims[0] > MAX_ITEMS:
                raise DataError(f"{path} declares {dims[0]} items, more than any such data set has; {fix}")
            if size + len(header) > on_disk * MAX_INFLATION + _CHUNK:
                raise DataError(
                    f"{path} declares {size} data bytes, over {MAX_INFLATION}x its {on_disk} bytes on disk: "
                    f"not image data (a decompression bomb?); {fix}"
                )
            payload = bytearray()  # grows with what the file really holds, never with what it claims
            while len(payload) < size:
                chunk = fh.read(min(_CHUNK, size - len(payload)))
                if not chunk:
                    break
                payload += chunk
            if len(payload) < size:
                raise DataError(f"{path} is truncated: {len(payload)} of {size} data bytes; {fix}")
            if fh.read(1):
                raise DataError(f"{path} has bytes after the {dims[0]} items its header declares; {fix}")
            digest.update(payload)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} cannot be read ({exc.__class__.__name__}: {exc}); {fix}") from None
    return np.frombuffer(payload, np.uint8).reshape(dims), digest.hexdigest()


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


@dataclass
class Dataset:
    """A data set held as uint8: images ``(n, 28, 28)``, labels ``(n,)``."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    sha256: dict[str, str] = field(default_factory=dict)

    @property
    def canonical(self) -> bool:
        """Whether every file read matches the published data set byte for byte."""
        published = SHA256.get(self.name, {})
        return bool(self.sha256) and all(published.get(k) == v for k, v in self.sha256.items())

    def describe(self) -> dict:
        """Provenance for ``metrics.json``."""
        return {
            "name": self.name,
            "source": self.source,
            "train_size": len(self.train_images),
            "test_size": len(self.test_images),
            "canonical": self.canonical,
            "sha256": self.sha256,
        }


def _find_files(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def cache_dir(dataset: str) -> Path:
    """Where downloads of ``dataset`` are kept."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("vaebench")) / dataset


def locate(dataset: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> dict[str, Path]:
    """The four files of ``dataset``, found or downloaded (see the module docstring)."""
    if dataset not in MIRRORS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(MIRRORS)}")
    for origin, value in (("--data-dir", data_dir), ("VAEBENCH_DATA_DIR", os.environ.get("VAEBENCH_DATA_DIR"))):
        if value:
            folder = Path(value).expanduser()
            files = _find_files(folder / dataset) or _find_files(folder)
            if files is None:
                names = ", ".join(f"{stem}.gz" for stem in FILES.values())
                raise DataError(f"{origin} {folder} has no {dataset} files (need {names}); point it at the folder holding them")
            return files
    for folder in (cache_dir(dataset), SYSTEM_DIR / dataset):
        files = _find_files(folder)
        if files is not None:
            return files
    if not download:
        raise DataError(f"{dataset} not found; pass --data-dir or set VAEBENCH_DATA_DIR")
    return download_dataset(dataset, cache_dir(dataset))


def download_dataset(dataset: str, target: Path) -> dict[str, Path]:
    """Fetch the four files from the first mirror that serves them intact."""
    from tqdm.auto import tqdm

    files = {}
    for key, stem in FILES.items():
        errors = []
        for mirror in MIRRORS[dataset]:
            url = f"{mirror}{stem}.gz"
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    chunks = []
                    with tqdm(total=total, unit="B", unit_scale=True, desc=f"{stem}.gz", leave=False) as bar:
                        while chunk := response.read(_CHUNK):
                            chunks.append(chunk)
                            bar.update(len(chunk))
                data = b"".join(chunks)
                if hashlib.sha256(gzip.decompress(data)).hexdigest() != SHA256[dataset][key]:
                    errors.append(f"{url}: checksum mismatch")
                    continue
            except (urllib.error.URLError, OSError, EOFError, zlib.error) as exc:
                errors.append(f"{url}: {exc}")
                continue
            atomic_write_bytes(target / f"{stem}.gz", data)
            files[key] = target / f"{stem}.gz"
            break
        else:
            raise DataError(
                f"could not download {stem}.gz from any mirror ({errors[-1] if errors else 'no mirrors'}); "
                f"offline? put the four {dataset} files in a folder and pass --data-dir or set VAEBENCH_DATA_DIR"
            )
    return files


def load_dataset(
    dataset: str = "mnist", data_dir: str | os.PathLike | None = None, download: bool = True, train: bool = True
) -> Dataset:
    """Locate, read and validate ``dataset``; all files read must agree.

    ``train=False`` reads only the test split (what evaluation needs): the
    training arrays are then empty and have no digest.
    """
    files = locate(dataset, data_dir, download)
    splits = ("train", "test") if train else ("test",)
    arrays = {f"train_{k}": np.zeros((0, 28, 28) if k == "images" else (0,), np.uint8) for k in ("images", "labels")}
    digests = {}
    for key, path in files.items():
        if key.split("_")[0] not in splits:
            continue
        images = key.endswith("images")
        arrays[key], digests[key] = read_idx(path, 3 if images else 1, (28, 28) if images else None)
    for split in splits:
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{files[f'{split}_labels']} has {n_lab} labels for {n_img} images in {files[f'{split}_images']}; "
                "the files come from different data sets: replace them"
            )
        if n_img == 0:
            raise DataError(f"{files[f'{split}_images']} holds no images")
    return Dataset(dataset, **arrays, source=str(files["test_images"].parent), sha256=digests)


def check_same_data(recorded: dict, found: Dataset, what: str, accept: bool) -> list[str]:
    """The files of ``found`` whose SHA-256 differs from what a run ``recorded``; refused unless ``accept``.

    A run's numbers mean something only on the data they were measured on: a
    resumed run that silently switched data sets would carry the old provenance
    over new numbers (or the reverse).
    """
    old = recorded.get("sha256") if isinstance(recorded, dict) else None
    if not isinstance(old, dict):
        return []
    changed = sorted(k for k, digest in found.sha256.items() if k in old and old[k] != digest)
    if changed and not accept:
        raise DataError(
            f"{found.source} holds different data than this run was trained on ({', '.join(changed)} differ); "
            f"{what} with the run's own data (it came from {recorded.get('source')}), or pass --accept-data-change"
        )
    return changed
