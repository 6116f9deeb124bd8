"""Shared fixtures: the real SmolLM2 tokenizer (offline, from `make setup`) and a tiny Llama."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "data" / "models" / "smollm2-135m"


@pytest.fixture(scope="session")
def tokenizer():
    from infdist_core.modeling import load_tokenizer

    if not (MODEL_DIR / "tokenizer.json").exists():
        pytest.fail(f"{MODEL_DIR} is missing: run `make setup` (README) to install the offline model")
    return load_tokenizer(MODEL_DIR)


@pytest.fixture()
def tiny_model(tokenizer):
    from infdist_core.modeling import tiny_llama

    return tiny_llama(len(tokenizer), seed=0, n_layers=4, hidden=32, pad_token_id=tokenizer.pad_token_id)


CHATS = [
    {"id": "a", "messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello there, friend!"}]},
    {"id": "b", "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                             {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "It is 6."}]},
    {"id": "c", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                             {"role": "assistant", "content": "Paris, which is also its largest city."}]},
    {"id": "d", "messages": [{"role": "user", "content": "List three colours please, in a longer sentence."},
                             {"role": "assistant", "content": "Red, green and blue are three colours."}]},
]


@pytest.fixture()
def chats():
    return [dict(c) for c in CHATS]
