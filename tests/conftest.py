"""Shared fixtures: the real SmolLM2 tokenizer (offline, from `make setup`), a tiny Llama, the tiny
test world, and a throwaway Postgres server."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "data" / "models" / "smollm2-135m"


def load_script(name: str):
    """``scripts/<name>.py`` as a module (the scripts are not a package), registered under ``name``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tokenizer():
    from infdist_core.model.modeling import load_tokenizer

    if not (MODEL_DIR / "tokenizer.json").exists():
        pytest.fail(f"{MODEL_DIR} is missing: run `make setup` (README) to install the offline model")
    return load_tokenizer(MODEL_DIR)


@pytest.fixture()
def tiny_model(tokenizer):
    from infdist_core.model.modeling import tiny_llama

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

    from infdist_core.model.modeling import load_tokenizer, tiny_llama

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def postgres(tmp_path):
    """A throwaway Postgres server (Debian's postgresql package), trust auth on localhost."""
    pytest.importorskip("dagster_postgres", reason="the k8s extra installs dagster-postgres")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found[-1]:
        pytest.skip("no Postgres server binaries (Debian: apt-get install postgresql; .ci/run installs it)")
    bin_dir = Path(found[-1]).parent
    as_user = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the package's postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start Postgres as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
    pgdata = Path(tempfile.mkdtemp(prefix="infdist-pg-"))  # outside pytest's 0700 tree: the postgres user reads it
    if as_user:
        shutil.chown(pgdata, "postgres")
    port = _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)  # noqa: E731
    init = run(str(bin_dir / "initdb"), "-D", str(pgdata / "db"), "-A", "trust", "-U", "postgres")
    if init.returncode != 0:
        pytest.skip(f"initdb failed here: {init.stderr.strip()[:300]}")
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(pgdata / "db"), "-l", str(pgdata / "log"), "-w", "-o",
              f"-p {port} -k {pgdata} -c listen_addresses=127.0.0.1"]
    start = run(*pg_ctl, "start")
    if start.returncode != 0:
        pytest.skip(f"Postgres did not start here: {start.stderr.strip()[:300]}")
    try:
        made = run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "dagster")
        assert made.returncode == 0, made.stderr

        def restart() -> None:  # what a fail-over looks like to a client: every connection dropped
            out = run(*pg_ctl, "-m", "fast", "restart")
            assert out.returncode == 0, out.stderr

        yield {"host": "127.0.0.1", "port": port, "bin": bin_dir, "restart": restart}
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(pgdata / "db"), "-m", "immediate", "stop")
        shutil.rmtree(pgdata, ignore_errors=True)
