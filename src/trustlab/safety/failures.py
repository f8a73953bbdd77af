"""When a run failed: the share of failed records above which a verb exits 4 (after writing what succeeded).

A record (a generation, or one judge's label) that failed for good is stored with its error, so a rerun with
``--retry-errors`` can try it again. A run where no record succeeded, or where more than ``FAIL_SHARE`` (half) of
the records failed, is not a result: the verb writes its files and then raises a ``BackendError`` (exit 4) naming
the count and the first failure (whose text names the server URL and the status).
"""

from __future__ import annotations

from typing import Iterable, Optional

from trustlab.runtime.errors import BackendError

FAIL_SHARE = 0.5


def failure(records: Iterable[dict], what: str, run_dir, error_key: str = "error",
            share: float = FAIL_SHARE) -> Optional[BackendError]:
    """The BackendError to raise when more than ``share`` of ``records`` (or all of them) failed, else None.
    A record failed when its ``status`` is ``error``; its failure text is ``record[error_key]``. Records with
    status ``empty`` (nothing to judge: no request was made) count neither way."""
    records = [r for r in records if r.get("status") != "empty"]
    bad = [r for r in records if r.get("status") == "error"]
    if not records or not bad or (len(bad) < len(records) and len(bad) <= share * len(records)):
        return None
    first = str(bad[0].get(error_key) or "unknown failure").splitlines()[0][:400]
    scope = "every one" if len(bad) == len(records) else f"more than {share:.0%}"
    return BackendError(f"{len(bad)} of {len(records)} {what} failed ({scope}); first failure: {first}",
                        hint=f"fix the server (see the first failure), then rerun with --retry-errors --out "
                             f"{run_dir}; what succeeded is kept there")
