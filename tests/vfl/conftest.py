import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRUSTLAB_QUIET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    from trustlab.runtime import configure_threads

    configure_threads(1)
