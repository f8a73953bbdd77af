"""The plug-in registries (issue 17 item 6): lazy targets, entry points, and every backend, judge, scheme and lab
listed by its registry."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from trustlab.runtime import registry as reg
from trustlab.runtime.errors import ConfigError
from trustlab.runtime.registry import Registry

SRC = Path(__file__).resolve().parents[1] / "src" / "trustlab"


def test_lazy_target_loads_on_get_and_unknown_names_the_valid_ones():
    r = Registry("test.things", entry_points=False)
    r.register("path", "pathlib:PurePosixPath", "a pure path")

    @r.register("local")
    class Local:
        """A local thing.

        More text."""

    assert r.names() == ["path", "local"]
    assert r.listing() == [("path", "a pure path"), ("local", "A local thing.")]
    from pathlib import PurePosixPath

    assert r.get("path") is PurePosixPath and r.get("local") is Local
    with pytest.raises(ConfigError, match="unknown thing 'nope'") as info:
        r.get("nope")
    assert "path, local" in info.value.hint
    with pytest.raises(ValueError, match="already registered"):
        r.register("path", "pathlib:Path")


def test_entry_points_add_names_and_a_broken_one_is_a_warning(monkeypatch):
    eps = [EntryPoint("extra", "pathlib:PurePath", "trustlab.test.things"),
           EntryPoint("broken", "no_such_module_xyz:Thing", "trustlab.test.things"),
           EntryPoint("path", "os:getcwd", "trustlab.test.things")]  # a built-in name wins
    seen = []
    monkeypatch.setattr(reg, "_entry_points", lambda group: seen.append(group) or eps)
    r = Registry("test.things")
    r.register("path", "pathlib:PurePosixPath", "a pure path")
    assert r.names() == ["path", "extra", "broken"] and seen == ["trustlab.test.things"]
    from pathlib import PurePath, PurePosixPath

    assert r.get("extra") is PurePath and r.get("path") is PurePosixPath
    with pytest.warns(UserWarning, match="broken"):
        rows = dict(r.listing())
    assert rows["broken"].startswith("(failed to load") and rows["path"] == "a pure path"
    with pytest.raises(ConfigError, match="failed to load"):
        r.get("broken")


def _plugin_modules(folder: str, skip: set[str]) -> set[str]:
    return {p.stem for p in (SRC / folder).glob("*.py") if p.stem not in skip and not p.stem.startswith("_")}


def _target_modules(r: Registry) -> set[str]:
    return {r.entry(n).target.partition(":")[0].rsplit(".", 1)[-1] for n in r.names()
            if isinstance(r.entry(n).target, str)}


def test_every_backend_is_listed_by_its_registry():
    from trustlab.safety.backends import BACKENDS

    assert _target_modules(BACKENDS) == _plugin_modules("safety/backends", {"base"})
    for name in BACKENDS.names():
        if name != "vllm":  # the vllm module imports without vllm; its class loads lazily
            assert hasattr(BACKENDS.get(name), "from_config")
    assert all(summary for _, summary in BACKENDS.listing())


def test_every_judge_is_listed_by_its_registry():
    from trustlab.safety.judges import JUDGES, REGISTRY
    from trustlab.safety.judges.base import Judge

    assert _target_modules(REGISTRY) == _plugin_modules("safety/judges", {"base"})
    assert set(JUDGES) <= set(REGISTRY.names())
    for name in REGISTRY.names():
        cls = REGISTRY.get(name)
        assert issubclass(cls, Judge) and cls.name == name
    assert all(summary for _, summary in REGISTRY.listing())


def test_every_fingerprint_scheme_and_lab_is_listed():
    from trustlab.cli.main import LABS
    from trustlab.fingerprint import STRATEGIES
    from trustlab.fingerprint.strategies import SCHEMES

    assert tuple(SCHEMES.names()) == STRATEGIES
    assert all(summary for _, summary in SCHEMES.listing())
    assert set(LABS.names()) == {"fingerprint", "vfl", "safety", "certify"}


def test_listing_a_registry_imports_no_plug_in():
    """``ls`` and ``--help`` stay cheap: reading a registry imports none of its targets."""
    code = ("import sys; from trustlab.safety.backends.base import BACKENDS; "
            "from trustlab.safety.judges.base import REGISTRY; BACKENDS.listing(); REGISTRY.listing(); "
            "bad = [m for m in sys.modules if m.startswith(('trustlab.safety.backends.', 'trustlab.safety.judges.'))"
            " and m.rsplit('.', 1)[-1] not in ('base', 'backends', 'judges')] + "
            "[m for m in ('torch', 'transformers', 'openai') if m in sys.modules]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_a_third_party_judge_joins_through_its_entry_point(tmp_path):
    """A package adds a judge without forking (group ``trustlab.safety.judges``); a broken entry is a warning, and
    ``trustlab safety ls`` still lists everything else."""
    (tmp_path / "my_judges.py").write_text(
        "from trustlab.safety.judges.base import Judge, Verdict\n"
        "class ShoutJudge(Judge):\n"
        "    '''Unsafe when the text is all capitals.'''\n"
        "    name = 'shout'\n"
        "    def _judge(self, items):\n"
        "        return [Verdict(unsafe=it.text.isupper()) for it in items]\n")
    info = tmp_path / "my_judges-1.0.dist-info"
    info.mkdir()
    (info / "entry_points.txt").write_text("[trustlab.safety.judges]\nshout = my_judges:ShoutJudge\n"
                                           "broken = no_such_module_xyz:Judge\n\n[console_scripts]\nx = y:z\n")
    code = ("from trustlab.cli.main import main\n"
            "from trustlab.safety.judges import JudgeItem, JudgeSpec, make_judge\n"
            "j = make_judge(JudgeSpec('shout'))\n"
            "print([v.unsafe for v in j.judge([JudgeItem('p', 'HOW TO'), JudgeItem('p', 'no')])])\n"
            "try:\n    main(['safety', 'ls'])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "[True, False]"
    assert any(ln.split()[:1] == ["shout"] and "Unsafe when the text is all capitals." in ln for ln in lines)
    assert any(ln.split()[:1] == ["broken"] and "failed to load" in ln for ln in lines)
    assert any(ln.split()[:1] == ["refusal"] for ln in lines)
    assert "broken" in res.stderr and "Traceback" not in res.stderr
