"Shared pytest fixtures for ftlab's tests (keep this file small)."
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="session")
def repo_root() -> Path:
    "The repository root (where pyproject.toml and index.ipynb are)."
    return ROOT

@pytest.fixture(scope="module")
def tiny_lm():
    "A 2-layer random Llama (`ftlab.testing.tiny_llama`) with SmolLM2's tokenizer: the real code path at test speed."
    from ftlab.assets import load_tokenizer
    from ftlab.testing import tiny_llama
    tok = load_tokenizer("causal_lm")
    if tok.pad_token is None: tok.pad_token = tok.eos_token
    return tiny_llama(tok, num_attention_heads=4, max_position_embeddings=128).eval(), tok
