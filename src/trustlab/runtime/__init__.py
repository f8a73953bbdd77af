"""Shared run-time ground: errors, threads, seeding, configs, run folders, progress. Imports nothing of ours."""

from .config import (config_hash, dump_yaml, from_dict, load_config, load_yaml, require_choice, require_range,
                     to_dict)
from .errors import (BackendError, ConfigError, DataError, Interrupted, MissingDependencyError, ModelError,
                     TrustlabError, require)
from .io import append_jsonl, read_jsonl, write_json_atomic
from .progress import is_quiet, progress, set_quiet
from .rundir import RunDir, default_run_path, environment, utc_now
from .seeding import derive_seed, seed_everything
from .threads import configure as configure_threads

__all__ = [
    "BackendError", "ConfigError", "DataError", "Interrupted", "MissingDependencyError", "ModelError",
    "RunDir", "TrustlabError", "append_jsonl", "config_hash", "configure_threads", "default_run_path",
    "derive_seed", "dump_yaml", "environment", "from_dict", "is_quiet", "load_config", "load_yaml", "progress",
    "read_jsonl", "require", "require_choice", "require_range", "seed_everything", "set_quiet", "to_dict",
    "utc_now", "write_json_atomic",
]
