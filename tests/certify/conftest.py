import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRUSTLAB_QUIET", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    from trustlab.runtime import configure_threads

    configure_threads(1)


@pytest.fixture(scope="session")
def digits_split():
    from trustlab.data import load, stratified_split

    d = load("digits")
    tr, te = stratified_split(d.y, 0.2, 0)
    return d.x[tr], d.y[tr], d.x[te], d.y[te]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
