"""Shared run-time ground: errors, threads, seeding, configs, run folders, record stores, progress.

Imports nothing of ours. Names load lazily from their submodules, so ``import trustlab.runtime.errors`` (the CLI's
start-up path) does not pull in the config, run-folder and progress machinery.
"""

from importlib import import_module

# ``progress`` is both a submodule and its main function: bind the function eagerly (the module is tiny) so that a
# later ``import trustlab.runtime.progress`` cannot leave the package attribute pointing at the module.
from .progress import is_quiet, progress, set_quiet  # noqa: F401

_HOMES = {
    "config": ("config_diff", "config_hash", "config_with_overrides", "dump_yaml", "from_dict", "load_config", "load_yaml", "require_choice", "require_range",
               "to_dict"),
    "errors": ("BackendError", "ConfigError", "DataError", "Interrupted", "MissingDependencyError", "ModelError",
               "TrustlabError", "require"),
    "io": ("append_jsonl", "load_stamped", "load_torch", "read_jsonl", "save_stamped", "save_torch_atomic",
           "write_json_atomic"),
    "records": ("RecordStore", "read_records"),
    "registry": ("Registry",),
    "files": ("at_path", "read_bytes", "read_text", "writable_dir", "write_secret"),
    "validate": ("check_types", "coerce", "parse_float_list", "parse_int_list"),
    "rundir": ("RunDir", "default_run_path", "environment", "utc_now"),
    "seeding": ("derive_seed", "seed_everything"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted([*_WHERE, "configure_threads", "is_quiet", "progress", "set_quiet"])


def __getattr__(name: str):
    if name == "configure_threads":
        return import_module(".threads", __name__).configure
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
