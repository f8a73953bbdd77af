"""The hostile-user replay (issue 16) covers at least 60 cases, with every category represented."""

from __future__ import annotations

import importlib
import pkgutil

import tests.hostile as hostile


def _cases() -> dict[str, list[str]]:
    found = {}
    for info in pkgutil.iter_modules(hostile.__path__):
        if info.name.startswith("test_") and info.name != "test_replay_size":
            module = importlib.import_module(f"tests.hostile.{info.name}")
            found[info.name] = list(getattr(module, "CASES", []))
    return found


def test_replay_holds_sixty_distinct_cases_across_every_category():
    found = _cases()
    ids = [c for cases in found.values() for c in cases]
    assert len(ids) >= 60, {k: len(v) for k, v in found.items()}
    assert len(set(ids)) == len(ids)
    for category in ("test_rundirs", "test_fpset_integrity", "test_servers", "test_all_failed", "test_nonfinite",
                     "test_workloads", "test_files_and_hints"):
        assert found.get(category), f"no cases in tests/hostile/{category}.py"
