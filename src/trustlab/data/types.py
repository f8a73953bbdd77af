"""Typed dataset objects returned by ``trustlab.data.load``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageData:
    """Images as float32 NCHW in [0, 1] with int64 labels 0..K-1.

    ``x_test``/``y_test`` are set where the source defines its own test split (Fashion-MNIST, idx, npz);
    otherwise labs make a seeded stratified split themselves.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.x) + (0 if self.x_test is None else len(self.x_test))


@dataclass(frozen=True)
class TableData:
    """A table of features (pandas DataFrame, original column types) with integer labels 0..K-1.

    ``numeric()`` gives the float matrix a model trains on, object/category columns one-hot encoded.
    """

    name: str
    frame: Any  # pandas.DataFrame of features only
    y: np.ndarray
    classes: tuple[str, ...]
    label_column: str
    ids: np.ndarray | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.frame.columns)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.frame)

    def numeric(self) -> tuple[np.ndarray, list[str], dict[str, list[int]]]:
        """(X float32, feature names, original column -> its indices in X); categoricals one-hot."""
        import pandas as pd

        blocks, names, groups = [], [], {}
        for col in self.frame.columns:
            s = self.frame[col]
            start = len(names)
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                blocks.append(s.to_numpy(dtype=np.float32)[:, None])
                names.append(col)
            else:
                cats = sorted(s.astype(str).unique())
                codes = pd.Categorical(s.astype(str), categories=cats).codes
                blocks.append(np.eye(len(cats), dtype=np.float32)[codes])
                names.extend(f"{col}={c}" for c in cats)
            groups[col] = list(range(start, len(names)))
        return np.concatenate(blocks, axis=1), names, groups


@dataclass(frozen=True)
class PromptSet:
    """Prompts with stable ids and categories (harm category, source)."""

    name: str
    ids: tuple[str, ...]
    prompts: tuple[str, ...]
    categories: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def head(self, n: int) -> "PromptSet":
        return PromptSet(self.name, self.ids[:n], self.prompts[:n], self.categories[:n], self.meta)


@dataclass(frozen=True)
class TextCorpus:
    """Dialogues: each a list of alternating user/assistant turns, with a topic category."""

    name: str
    dialogues: tuple[tuple[str, ...], ...]
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.dialogues)
