"""Vertical partitions: who holds which features, ID alignment by salted hashes, seeded splits, party files.

Images are cut into strips (``split: columns|rows`` by ``ratios``), tables into column ``groups``. Numeric table
columns are standardised per party (label-free preprocessing each owner can do alone); categoricals are one-hot.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trustlab.runtime import ConfigError, DataError


@dataclass(frozen=True)
class PartyData:
    """One data owner's block: rows keyed by ``ids``; ``image_shape`` (C,H,W) for image strips."""

    ids: np.ndarray
    X: np.ndarray
    feature_names: tuple[str, ...]
    image_shape: tuple[int, ...] | None = None
    onehot: tuple[tuple[int, ...], ...] = ()  # column indices of each one-hot group (tables)
    named: bool = True  # feature_names came from the data (not made up as x0, x1, ...)

    @property
    def d(self) -> int:
        return int(self.X.shape[1])


def features_sha256(names) -> str:
    """SHA-256 of a block's column names: lets an auditor check that aux rows are the right party's, without
    A ever seeing the names."""
    return hashlib.sha256("\x1f".join(map(str, names)).encode()).hexdigest()


@dataclass(frozen=True)
class LabelData:
    """What the label party holds: ids, labels, class names, and a predefined test mask if the source has one."""

    ids: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    test_mask: np.ndarray | None = None


@dataclass(frozen=True)
class VerticalData:
    name: str
    kind: str  # "images" | "table"
    parties: tuple[PartyData, ...]
    labels: LabelData
    splits: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        return self.labels.y


# --- loading ------------------------------------------------------------------------------------
def _read_vfl_npz(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"npz file {path!r} does not exist", hint="pass npz:FILE with an existing file")
    from trustlab.runtime import at_path

    with at_path(p, "npz file"):
        with open(p, "rb") as fh:
            magic = fh.read(4)
    if magic[:2] != b"PK":  # np.load would try to unpickle anything that is not a zip or .npy
        raise DataError(f"npz file {path!r} is not an npz archive (it does not start like a zip file)",
                        hint="write it with numpy.savez(path, X=..., y=...)")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(f"cannot read npz file {path!r}: {first}", hint="write it with numpy.savez") from None


def _source(dc, seed: int):
    """(kind, X images NCHW or table, y, classes, ids, test_mask, table extras)."""
    from trustlab import data as tdata

    name = dc.name if dc.path is None else f"{dc.name}:{dc.path}" if ":" not in dc.name else dc.name
    prefix = name.split(":", 1)[0]
    if prefix == "npz":
        z = _read_vfl_npz(name.split(":", 1)[1])
        if "X" not in z and "x_train" in z:
            img = tdata.load(name)
        else:
            missing = [k for k in ("X", "y") if k not in z]
            if missing:
                raise DataError(f"npz file {name[4:]!r} lacks {', '.join(missing)} (has {', '.join(z) or 'nothing'})",
                                hint="save arrays X (n, d) or (n, C, H, W), y (n,), optional ids and image_shape")
            f = name[4:]
            X, y = np.asarray(z["X"]), np.asarray(z["y"])
            if X.ndim < 2 or len(X) == 0 or X[0].size == 0:
                raise DataError(f"npz {f!r}: X has shape {X.shape}; expected (n, d) or (n, C, H, W) with n, d > 0",
                                hint="save X as a 2-D table or a stack of images")
            if X.dtype == bool or not np.issubdtype(X.dtype, np.number):
                raise DataError(f"npz {f!r}: X has dtype {X.dtype}; expected numbers",
                                hint="convert X to float32 (or uint8 images) before saving")
            if y.ndim != 1 or len(X) != len(y):
                raise DataError(f"npz {f!r}: X has {len(X)} rows, y has shape {y.shape}",
                                hint="save one integer label per row of X")
            if not np.issubdtype(y.dtype, np.integer):
                raise DataError(f"npz {f!r}: y has dtype {y.dtype}; expected integer labels",
                                hint="save y as integers 0..K-1")
            _check_label_range(y, f)
            ids = z["ids"].astype(str) if "ids" in z else None
            if "image_shape" in z or X.ndim >= 3:
                try:
                    shape = tuple(int(s) for s in z["image_shape"]) if "image_shape" in z else (
                        (1,) + X.shape[1:] if X.ndim == 3 else X.shape[1:])
                    X = X.reshape(len(X), *shape)
                except (TypeError, ValueError):
                    raise DataError(f"npz {f!r}: image_shape {z['image_shape'].tolist()} does not fit X of shape "
                                    f"{X.shape}", hint="image_shape is (C, H, W) with C*H*W = features per row"
                                    ) from None
                X = image_pixels(X, f"npz {f!r} (array X)")
                _check_labels(y, name)
                return "images", X, y.astype(np.int64), _classes(y), ids, None
            Xf = X.reshape(len(X), -1).astype(np.float32)
            _check_finite(Xf, name)
            import pandas as pd

            frame = pd.DataFrame(Xf, columns=[f"x{j}" for j in range(Xf.shape[1])])
            _check_labels(y, name)
            return "table", frame, y.astype(np.int64), _classes(y), ids, None
    elif name == "synthetic":
        from sklearn.datasets import make_classification
        import pandas as pd

        X, y = make_classification(n_samples=2000, n_features=20, n_informative=10, n_classes=2, random_state=seed)
        return "table", pd.DataFrame(X.astype(np.float32), columns=[f"x{j}" for j in range(20)]), y, ("0", "1"), None, None
    else:
        opts = {}
        if prefix in ("csv", "parquet"):
            opts = {"label_column": dc.label_column, "id_column": dc.id_column}
        elif name in ("fashion-mnist", "fashion_mnist") and dc.subsample:
            opts = {"subsample": dc.subsample}
        img = tdata.load(name, **opts)
    if isinstance(img, tdata.ImageData):
        X, y, test_mask = img.x, img.y, None
        if img.x_test is not None:
            X = np.concatenate([img.x, img.x_test])
            y = np.concatenate([img.y, img.y_test])
            test_mask = np.r_[np.zeros(len(img.x), bool), np.ones(len(img.x_test), bool)]
        _check_labels(y, name)
        return "images", X, y, tuple(img.classes), None, test_mask
    if isinstance(img, tdata.TableData):
        _check_labels(img.y, name)
        ids = None if img.ids is None else np.asarray(img.ids).astype(str)
        return "table", img.frame, img.y, tuple(img.classes), ids, None
    raise DataError(f"dataset {name!r} is not an image or table dataset", hint="VFL needs images or a table")


def _classes(y: np.ndarray) -> tuple[str, ...]:
    return tuple(str(i) for i in range(int(y.max()) + 1))


def _check_labels(y: np.ndarray, name: str) -> None:
    if len(np.unique(y)) < 2:
        raise DataError(f"dataset {name!r} has a single class", hint="VFL classification needs >= 2 classes")


def _check_label_range(y: np.ndarray, f: str) -> None:
    """Labels are 0..K-1 with every class present: {0, 1, 2, 999} would build a 1000-class model."""
    if len(y) == 0:
        raise DataError(f"npz {f!r} holds no rows", hint="save at least a few rows per class")
    if y.min() < 0:
        raise DataError(f"npz {f!r}: label {int(y.min())} is negative; labels must be 0..K-1",
                        hint="remap them: y = numpy.unique(y, return_inverse=True)[1]")
    present = np.unique(y)
    if len(present) != int(y.max()) + 1:
        raise DataError(f"npz {f!r}: labels take {len(present)} values but range up to {int(y.max())} "
                        f"(missing classes, e.g. {sorted(set(range(int(y.max()) + 1)) - set(present.tolist()))[:3]})",
                        hint="remap them to 0..K-1: y = numpy.unique(y, return_inverse=True)[1]")


def image_pixels(X: np.ndarray, where: str) -> np.ndarray:
    """Image arrays as float32 on [0, 1]: uint8 is divided by 255; floats must already be finite and on [0, 1]
    (the attacks' clamping, the Sigmoid inverse network and the PSNR all assume it)."""
    if X.dtype == np.uint8:
        return X.astype(np.float32) / 255.0
    X = X.astype(np.float32)
    flat = X.reshape(len(X), -1)
    bad = ~np.isfinite(flat)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(f"{where}: {int(bad.sum())} pixel values are NaN or inf (images {rows[:5].tolist()}"
                        f"{', ...' if len(rows) > 5 else ''})", hint="drop or repair those images before training")
    lo, hi = float(flat.min()), float(flat.max())
    if lo < 0 or hi > 1:
        fix = "divide by 255 (X / 255.0) or save uint8" if hi > 1 and lo >= 0 and hi <= 255 else \
            "rescale them to [0, 1]"
        raise DataError(f"{where}: pixel values lie in [{lo:g}, {hi:g}], not in [0, 1]", hint=fix)
    return X


def _check_finite(X: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        col = int(np.argmax(bad.any(axis=0)))
        raise DataError(f"dataset {name!r}: column {col} has {int(bad[:, col].sum())} NaN/inf values",
                        hint="clean the data or use fillna")


def _shuffle_subsample(n: int, dc, seed: int, test_mask) -> np.ndarray:
    """Row order: shuffled (mnist-5k is sorted by label) and capped at ``subsample``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if dc.subsample and dc.subsample < n:
        if test_mask is not None:  # keep the source's train/test proportions
            tr, te = order[~test_mask[order]], order[test_mask[order]]
            k_te = max(2, int(round(dc.subsample * len(te) / n)))
            order = np.r_[tr[:dc.subsample - k_te], te[:k_te]]
        else:
            order = order[:dc.subsample]
    return order


def _strips(n: int, ratios) -> list[tuple[int, int]]:
    cuts = np.round(np.cumsum([0.0, *ratios]) * n).astype(int)
    cuts[-1] = n
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]


def partition_images(X: np.ndarray, dc) -> list[tuple[np.ndarray, tuple[int, int, int], list[str]]]:
    """Cut NCHW images into ``n_parties`` strips along W (columns) or H (rows); each keeps its 2-D shape."""
    k = dc.n_parties
    ratios = dc.ratios or (1.0 / k,) * k
    axis = 3 if dc.split == "columns" else 2
    out = []
    for i, (a, b) in enumerate(_strips(X.shape[axis], ratios)):
        if b <= a:
            raise ConfigError(f"party {i} gets an empty strip of the {X.shape[2]}x{X.shape[3]} images",
                              hint="use fewer parties or larger ratios")
        strip = X[:, :, :, a:b] if axis == 3 else X[:, :, a:b, :]
        names = [f"{'col' if axis == 3 else 'row'}{a}-{b - 1}:px{j}" for j in range(int(np.prod(strip.shape[1:])))]
        out.append((strip.reshape(len(X), -1).astype(np.float32), tuple(strip.shape[1:]), names))
    return out


def partition_table(frame, dc) -> list[tuple[np.ndarray, list[str], tuple[tuple[int, ...], ...]]]:
    """Split table columns into groups (disjoint; covering unless ``drop_unassigned``); one-hot + standardise."""
    cols = [str(c) for c in frame.columns]
    if dc.groups is not None:
        groups = [list(g) for g in dc.groups]
        if len(groups) != dc.n_parties:
            raise ConfigError(f"data.groups has {len(groups)} groups but data.n_parties is {dc.n_parties}",
                              hint="set n_parties to the number of groups")
        seen: dict[str, int] = {}
        for i, g in enumerate(groups):
            if not g:
                raise ConfigError(f"data.groups[{i}] is empty: party {i} would hold no features")
            for c in g:
                if c not in cols:
                    raise ConfigError(f"data.groups[{i}] names unknown column {c!r}",
                                      hint=f"available columns: {', '.join(cols)}")
                if c in seen:
                    raise ConfigError(f"column {c!r} is in data.groups[{seen[c]}] and data.groups[{i}]",
                                      hint="groups must be disjoint")
                seen[c] = i
        rest = [c for c in cols if c not in seen]
        if rest and not dc.drop_unassigned:
            raise ConfigError(f"data.groups leave column(s) {', '.join(map(repr, rest))} unassigned",
                              hint="assign every column to a group, or set data.drop_unassigned: true")
    else:
        k = dc.n_parties
        spans = _strips(len(cols), dc.ratios or (1.0 / k,) * k)
        groups = [cols[a:b] for a, b in spans]
        for i, g in enumerate(groups):
            if not g:
                raise ConfigError(f"party {i} gets no columns of the {len(cols)}-column table",
                                  hint="use fewer parties or set data.groups")
    from trustlab.data import TableData

    out = []
    for g in groups:
        sub = frame[[c for c in frame.columns if str(c) in g]]
        X, names, colmap = TableData("part", sub, np.zeros(len(sub), np.int64), ("0",), "y").numeric()
        _check_finite(X, f"group {g}")
        onehot = []
        for c, idx in colmap.items():
            if len(idx) == 1 and names[idx[0]] == str(c):
                j = idx[0]
                sd = X[:, j].std()
                X[:, j] = (X[:, j] - X[:, j].mean()) / (sd if sd > 0 else 1.0)
            else:
                onehot.append(tuple(idx))
        out.append((X.astype(np.float32), names, tuple(onehot)))
    return out


def load_vertical(cfg, seed: int | None = None) -> VerticalData:
    """The whole federation in one process: every party's block, A's labels, and the seeded splits."""
    dc = cfg.data
    seed = cfg.train.seed if seed is None else seed
    kind, X, y, classes, ids, test_mask = _source(dc, seed)
    order = _shuffle_subsample(len(y), dc, seed, test_mask)
    y = np.asarray(y, dtype=np.int64)[order]
    test_mask = None if test_mask is None else test_mask[order]
    ids = np.asarray([str(i) for i in order]) if ids is None else np.asarray(ids)[order].astype(str)
    parties = []
    if kind == "images":
        for Xi, shape, names in partition_images(np.asarray(X)[order], dc):
            parties.append(PartyData(ids, Xi, tuple(names), shape))
    else:
        frame = X.iloc[order].reset_index(drop=True)
        for Xi, names, onehot in partition_table(frame, dc):
            parties.append(PartyData(ids, Xi, tuple(names), None, onehot))
    if dc.label_party_block is not None and not 0 <= dc.label_party_block < len(parties):
        raise ConfigError(f"data.label_party_block={dc.label_party_block} but there are {len(parties)} blocks")
    labels = LabelData(ids, y, classes, test_mask)
    return VerticalData(dc.name, kind, tuple(parties), labels, make_splits(labels, dc, seed))


def make_splits(labels: LabelData, dc, seed: int) -> dict[str, np.ndarray]:
    """Stratified test (``test_frac``, or the source's own test split), aux = ``aux_frac`` of train, and the
    training rows (train minus aux unless ``aux_in_training``). Positions index the aligned rows."""
    from trustlab.data import stratified_split

    y = labels.y
    try:
        if labels.test_mask is not None:
            train, test = np.flatnonzero(~labels.test_mask), np.flatnonzero(labels.test_mask)
        else:
            train, test = stratified_split(y, dc.test_frac, seed)
        rest, aux = stratified_split(y[train], dc.aux_frac, seed + 1)
    except ValueError as exc:
        raise DataError(f"cannot make stratified splits of {len(y)} rows: {exc}",
                        hint="each class needs a few rows; use more data or a smaller test_frac/aux_frac") from exc
    fit = train if dc.aux_in_training else train[rest]
    return {"train": np.sort(fit), "aux": np.sort(train[aux]), "test": np.sort(test)}


# --- alignment ----------------------------------------------------------------------------------
def hash_ids(ids: np.ndarray, salt: str) -> np.ndarray:
    """SHA-256(salt || id) per row, as uint8 (n, 32). Not a PSI: equal ids give equal hashes to anyone with the salt."""
    return np.frombuffer(b"".join(hashlib.sha256((salt + str(i)).encode()).digest() for i in ids),
                         dtype=np.uint8).reshape(len(ids), 32)


def align(label_hashes: np.ndarray, party_hashes: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Intersect in the label party's order: (A's kept rows, each party's row index for them).

    Duplicate ids and an empty intersection raise DataError; an intersection below 50% of A's rows warns."""
    def keys(h: np.ndarray, who: str) -> dict[bytes, int]:
        out = {bytes(r): j for j, r in enumerate(h)}
        if len(out) != len(h):
            raise DataError(f"{who} has {len(h) - len(out)} duplicate ids", hint="ids must be unique per party")
        return out

    a = keys(label_hashes, "the label party")
    maps = [keys(h, f"party {i}") for i, h in enumerate(party_hashes)]
    kept = [j for k, j in a.items() if all(k in m for m in maps)]
    if not kept:
        raise DataError("the parties' ids do not intersect", hint="check the id columns and the salt")
    if len(kept) < 0.5 * len(a):
        warnings.warn(f"only {len(kept)} of {len(a)} label rows are held by every party", stacklevel=2)
    kept_arr = np.asarray(sorted(kept), dtype=np.int64)
    rows = [np.asarray([m[bytes(label_hashes[j])] for j in kept_arr], dtype=np.int64) for m in maps]
    return kept_arr, rows


# --- party files --------------------------------------------------------------------------------
def export_parties(cfg, out: str | Path, seed: int | None = None) -> list[Path]:
    """Write ``label.npz`` (ids, y, classes, test_mask) and ``party{i}.npz`` (X, ids, feature_names, image_shape)."""
    vd = load_vertical(cfg, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lab = vd.labels
    paths = [out / "label.npz"]
    np.savez(paths[0], ids=lab.ids, y=lab.y, classes=np.asarray(lab.classes),
             **({} if lab.test_mask is None else {"test_mask": lab.test_mask}))
    for i, p in enumerate(vd.parties):
        extra = {"image_shape": np.asarray(p.image_shape)} if p.image_shape else {}
        onehot = np.asarray([j for g in p.onehot for j in g], dtype=np.int64)
        sizes = np.asarray([len(g) for g in p.onehot], dtype=np.int64)
        paths.append(out / f"party{i}.npz")
        np.savez(paths[-1], X=p.X, ids=p.ids, feature_names=np.asarray(p.feature_names),
                 onehot=onehot, onehot_sizes=sizes, **extra)
    return paths


def load_party_file(path: str | Path) -> PartyData:
    """A ``party{i}.npz`` written by ``export_parties`` (or any npz with X and ids)."""
    z = _read_vfl_npz(str(path))
    if "X" not in z:
        raise DataError(f"party file {str(path)!r} lacks X (has {', '.join(z) or 'nothing'})",
                        hint="write it with `trustlab vfl export-parties`")
    X = np.asarray(z["X"])
    if X.ndim < 1 or len(X) == 0 or X.dtype == bool or not np.issubdtype(X.dtype, np.number):
        raise DataError(f"party file {str(path)!r}: X has shape {X.shape} and dtype {X.dtype}; expected numbers, "
                        "one row per sample", hint="write it with `trustlab vfl export-parties`")
    X = X.reshape(len(X), -1)
    if "image_shape" in z:
        X = image_pixels(X, f"party file {str(path)!r} (array X)")
    X = X.astype(np.float32)
    _check_finite(X, str(path))
    ids = z["ids"].astype(str) if "ids" in z else np.asarray([str(i) for i in range(len(X))])
    if len(ids) != len(X):
        raise DataError(f"party file {str(path)!r}: {len(X)} rows but {len(ids)} ids")
    names = tuple(z["feature_names"].astype(str)) if "feature_names" in z else tuple(f"x{j}" for j in range(X.shape[1]))
    shape = tuple(int(s) for s in z["image_shape"]) if "image_shape" in z else None
    onehot: tuple[tuple[int, ...], ...] = ()
    if "onehot" in z and "onehot_sizes" in z:
        flat, sizes = z["onehot"].tolist(), z["onehot_sizes"].tolist()
        bounds = np.cumsum([0, *sizes])
        onehot = tuple(tuple(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
    return PartyData(ids, X, names, shape, onehot, named="feature_names" in z)


def load_label_file(path: str | Path) -> LabelData:
    """``label.npz``: ids, y, optional classes and test_mask."""
    z = _read_vfl_npz(str(path))
    if "y" not in z:
        raise DataError(f"label file {str(path)!r} lacks y", hint="write it with `trustlab vfl export-parties`")
    y = z["y"].astype(np.int64)
    ids = z["ids"].astype(str) if "ids" in z else np.asarray([str(i) for i in range(len(y))])
    classes = tuple(z["classes"].astype(str)) if "classes" in z else _classes(y)
    _check_labels(y, str(path))
    return LabelData(ids, y, classes, z["test_mask"].astype(bool) if "test_mask" in z else None)
