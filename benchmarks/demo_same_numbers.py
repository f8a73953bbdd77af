"""Same seeds, same numbers: run a lab's quick demo into a fresh folder, run it again (into a second fresh folder,
and once more into the first folder, which resumes it), and diff every number of the three results.json files.

    python benchmarks/demo_same_numbers.py vfl certify [--out runs/same-numbers] [--full]

Numbers that measure time or the machine (seconds, throughput, timestamps, the environment block) are left out;
every other number must be equal bit for bit. Exit 0 when they are, 1 (with the differing paths) when not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator

# keys whose values are clocks, rates or the machine, never results
_CLOCK = re.compile(r"(^|_)(s|sec|secs|seconds|time|times|elapsed|wall|duration|throughput|per_s|per_sec|rate_s|"
                    r"started|finished|hours|minutes|eta)$|^(environment|timing|timings|trustlab_version|run_id|versions)$")


def numbers(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every number (and None, where a number may stand) in a JSON tree, clock keys left out."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not _CLOCK.search(str(k)):
                yield from numbers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{path}[{i}]")
    elif obj is None or (isinstance(obj, (int, float)) and not isinstance(obj, bool)):
        yield path, obj


def diff(a: dict, b: dict) -> list[str]:
    """The paths whose numbers differ (or exist on one side only) between two results.json trees."""
    na, nb = dict(numbers(a)), dict(numbers(b))
    return [f"{p}: {na.get(p, '<absent>')!r} != {nb.get(p, '<absent>')!r}" for p in sorted(na.keys() | nb.keys())
            if p not in na or p not in nb or na[p] != nb[p]]


def run_twice(lab: str, root: Path, quick: bool = True) -> dict[str, Any]:
    """The lab's demo fresh into root/a, fresh into root/b, then resumed into root/a; the numbers compared and the
    seconds each run took."""
    from trustlab.cli.main import lab_module

    demo = lab_module(lab).run_demo
    secs, res = {}, {}
    for name, folder in (("fresh", root / "a"), ("second", root / "b"), ("resumed", root / "a")):
        t0 = time.perf_counter()
        run_dir = Path(demo(folder, quick=quick))
        secs[name] = time.perf_counter() - t0
        res[name] = json.loads((run_dir / "results.json").read_text())
    n = sum(1 for _ in numbers(res["fresh"]))
    return {"lab": lab, "numbers": n, "seconds": secs, "second_vs_fresh": diff(res["fresh"], res["second"]),
            "resumed_vs_fresh": diff(res["fresh"], res["resumed"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labs", nargs="+")
    ap.add_argument("--out", type=Path, default=Path("runs/same-numbers"))
    ap.add_argument("--full", action="store_true", help="the full demos (slow) instead of the quick ones")
    args = ap.parse_args(argv)
    from trustlab.runtime import configure_threads

    configure_threads(1)
    bad = 0
    for lab in args.labs:
        r = run_twice(lab, args.out / lab, quick=not args.full)
        s = r["seconds"]
        print(f"{lab}: {r['numbers']} numbers; fresh {s['fresh']:.1f} s, second {s['second']:.1f} s, "
              f"resumed {s['resumed']:.1f} s; differing: second {len(r['second_vs_fresh'])}, "
              f"resumed {len(r['resumed_vs_fresh'])}")
        for line in r["second_vs_fresh"][:20] + r["resumed_vs_fresh"][:20]:
            print("  " + line)
        bad += bool(r["second_vs_fresh"] or r["resumed_vs_fresh"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
