"Shared pytest fixtures for ftlab's tests (keep this file small)."
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="session")
def repo_root() -> Path:
    "The repository root (where pyproject.toml and index.ipynb are)."
    return ROOT
