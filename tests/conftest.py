from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

#: Dask is an extra (morphml[scale]; the test extras install it): tests that need it skip
#: with this reason when it is missing
HAVE_DASK = importlib.util.find_spec("distributed") is not None
needs_dask = pytest.mark.skipif(
    not HAVE_DASK, reason="needs Dask, not installed: pip install 'morphml[scale]'"
)

#: real data shared beside the repository (never copied into it)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA
