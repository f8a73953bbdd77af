"""Verbs over several safety runs: ``compare`` (paired differences of runs on the same prompts) and ``merge`` (shard
runs of one config into one run, metrics recomputed)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from trustlab.runtime.config import config_diff, to_dict
from trustlab.runtime.errors import ConfigError, DataError
from trustlab.runtime.records import read_records

from .pipeline import (GENERATIONS, LABELS, MetricsResult, _open, _write_run_json, content_config, generations_store,
                       labels_store, metrics, run_config)
from .store import generation_key, label_key


@dataclass
class CompareResult:
    runs: list[Path]
    differences: dict[str, Any]


def _matrices(path: Path, k: int) -> dict[tuple[str, str, str], tuple[list[str], Any]]:
    """(strategy, judge, part) -> (complete prompt ids, (n, k) safe matrix)."""
    import numpy as np

    from .metrics import part_safe

    _, gens = read_records(path / GENERATIONS, "generations file")
    labels = read_records(path / LABELS, "labels file")[1] if (path / LABELS).is_file() else []
    ok = {generation_key(g): g for g in gens}
    ok = {key: g for key, g in ok.items() if g.get("status", "ok") == "ok"}
    lab = {label_key(r): r for r in labels}
    cells: dict[tuple[str, str, str], dict[str, dict[int, Optional[bool]]]] = {}
    for r in lab.values():
        if generation_key(r) not in ok:
            continue
        cells.setdefault((r["strategy"], r["judge"], r["part"]), {}).setdefault(r["prompt_id"], {})[int(r["sample"])] = \
            part_safe(ok[generation_key(r)], r, r["part"])  # a truncated sample's answer does not count
    out = {}
    for cell, per in cells.items():
        ids = sorted(pid for pid, s in per.items() if all(s.get(j) is not None for j in range(k)))
        out[cell] = (ids, np.array([[per[pid][j] for j in range(k)] for pid in ids], dtype=bool).reshape(len(ids), k))
    return out


def compare(runs: Sequence[str | Path], tie: str = "safe", n_boot: int = 1000, seed: int = 0) -> CompareResult:
    """Paired differences (run i minus run 0) of Safe@1 / Safe@K / ConsSafe@K per strategy, judge and part,
    over the prompts complete in both runs, with paired-bootstrap intervals."""
    from .metrics import paired_block

    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs", hint="trustlab safety compare RUN_A RUN_B")
    paths = [Path(r) for r in runs]
    ks = [run_config(p).sampling.k for p in paths]
    if len(set(ks)) != 1:
        raise ConfigError(f"runs have different K ({', '.join(map(str, ks))})", hint="compare runs with the same -k")
    mats = [_matrices(p, ks[0]) for p in paths]
    out: dict[str, Any] = {}
    for p, m in zip(paths[1:], mats[1:]):
        block: dict[str, Any] = {}
        for cell in sorted(set(m) & set(mats[0])):
            s, jn, part = cell
            block.setdefault(s, {}).setdefault(jn, {})[part] = paired_block(*m[cell], *mats[0][cell], tie, n_boot,
                                                                           0.05, seed)
        out[f"{p.name} - {paths[0].name}"] = block
    return CompareResult(paths, out)


@dataclass
class MergeResult:
    run_dir: Path
    n_generations: int
    n_labels: int
    metrics: Optional[MetricsResult]


def merge(shards: Sequence[str | Path], out: str | Path, report: bool = True) -> MergeResult:
    """Merge shard runs (same config except ``shard``) into ``out``; a key held by two shards must be identical
    (it is kept once). Metrics are recomputed on the merged files."""
    if not shards:
        raise ConfigError("merge needs at least one shard run", hint="trustlab safety merge SHARD... --out RUN")
    paths = [Path(s) for s in shards]
    cfgs = [run_config(p) for p in paths]
    base = dataclasses.replace(content_config(cfgs[0]), shard="0/1")
    for p, c in zip(paths[1:], cfgs[1:]):
        diff = config_diff(to_dict(base), to_dict(dataclasses.replace(content_config(c), shard="0/1")))
        if diff:
            raise ConfigError(f"shard {str(p)!r} was run with another config; differing keys: {', '.join(diff)}",
                              hint="merge only shards of one run (same flags except --shard)")
    out = Path(out)
    if (out / GENERATIONS).exists():
        raise ConfigError(f"merge target {str(out)!r} already holds generations", hint="choose a new --out folder")
    merged_cfg = dataclasses.replace(cfgs[0], shard="0/1")
    run = _open(merged_cfg, out, "merge", resume=True)
    counts = []
    for fname, key_fn, maker in ((GENERATIONS, generation_key, generations_store), (LABELS, label_key, labels_store)):
        seen: dict[str, dict] = {}
        for p in paths:
            if not (p / fname).is_file():
                continue
            _, recs = read_records(p / fname)
            for r in {key_fn(r): r for r in recs}.values():
                k = key_fn(r)
                if k in seen and {x: v for x, v in seen[k].items() if x != "elapsed_s"} != \
                        {x: v for x, v in r.items() if x != "elapsed_s"}:
                    raise DataError(f"record {k!r} differs between shards", hint="shards must not overlap")
                seen[k] = r
        maker(run.path, merged_cfg).append(seen.values())
        counts.append(len(seen))
    _write_run_json(run.path, merged_cfg, "merged", merged_from=[str(p) for p in paths])
    m = metrics(run.path, verb="merge", report=report) if counts[0] else None
    return MergeResult(run.path, counts[0], counts[1], m)
