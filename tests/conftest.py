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


def _chat(i, q, a):
    return {"id": f"s{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write_world(data: Path, pool_rows: int = 45) -> Path:
    """A registry under ``data`` for the asset tests: model ``tiny`` (a random 3-block Llama with
    the real tokenizer), a seeded pool of ``pool_rows`` chats, tasks ``math`` (with a GSM8K-style
    evaluation file) and ``code``. Returns the registry path."""
    import json

    import numpy as np

    from infdist_core.modeling import load_tokenizer, tiny_llama

    tok = load_tokenizer(MODEL_DIR)
    model = tiny_llama(len(tok), seed=0, n_layers=3, hidden=32, pad_token_id=tok.pad_token_id)
    model.save_pretrained(data / "models" / "tiny")
    tok.save_pretrained(data / "models" / "tiny")
    rng = np.random.default_rng(0)
    words = "apple river seven quantum green tiny code loop sum add".split()
    pool = [_chat(i, " ".join(rng.choice(words, 6)), " ".join(rng.choice(words, int(rng.integers(3, 12)))))
            for i in range(pool_rows)]
    (data / "pool.jsonl").write_text("\n".join(json.dumps(r) for r in pool))
    (data / "math.jsonl").write_text("\n".join(json.dumps(_chat(f"t{i}", f"What is {i}+1?", f"{i}+1 = {i+1}. The answer is {i+1}."))
                                               for i in range(3)))
    (data / "code.jsonl").write_text("\n".join(json.dumps(_chat(f"c{i}", "Write code", "def f():\n    return 1")) for i in range(2)))
    (data / "math_test.jsonl").write_text("\n".join(json.dumps({"question": f"What is {i}+2?", "answer": f"x #### {i+2}",
                                                                 "final": str(i + 2)}) for i in range(4)))
    reg = data / "registry.yaml"
    reg.write_text("""pool: pool.jsonl
models:
  tiny: {path: models/tiny}
tasks:
  math: {targets: math.jsonl, eval: {kind: gsm8k, path: math_test.jsonl}}
  code: {targets: code.jsonl}
""")
    return reg
