"""The Dagster UI in a real browser: start the webserver on 127.0.0.1, wait for the code location,
dismiss the one-time community modal, render the asset graph in headless Chromium and check that
the pipeline's assets are on the page (DOM) and in what the server rendered (GraphQL)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXPECTED = ["sampled_pool", "warmup_checkpoint", "landmark_gradients", "pool_embeddings", "krr_coefficients",
            "per_target_weights"]

pytestmark = pytest.mark.ui


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "INFDIST_DATA": str(ROOT / "data")}
    log = (home / "webserver.log").open("w")
    # a new session: SIGTERM reaches the server and the code-server child it spawns
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml",
                             "-h", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"webserver exited early ({proc.returncode}): {(home / 'webserver.log').read_text()[-2000:]}")
            try:
                ws = _graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }")
                entries = ws["data"]["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("the code location did not load within 240 s")
            time.sleep(1)
        _graphql(port, "mutation { setNuxSeen }")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_graphql_lists_the_pipeline_assets(webserver):
    data = _graphql(webserver, "{ assetNodes { assetKey { path } groupName } }")["data"]["assetNodes"]
    keys = {"/".join(n["assetKey"]["path"]) for n in data}
    assert set(EXPECTED) | {"infdist/selected_subset", "infdist/eval_scores"} <= keys


def _chromium(url: str, profile: Path, *extra: str, height: int = 1000) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed here (`apt-get install chromium`), so the browser check cannot run")
    args = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size=1600,{height}",
            "--virtual-time-budget=30000", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=180).stdout


def test_asset_graph_renders_in_headless_chromium(webserver, tmp_path):
    base = f"http://127.0.0.1:{webserver}"
    # the global lineage graph: collapsed into the asset groups of the pipeline
    lineage = _chromium(f"{base}/asset-groups", tmp_path / "p1", "--dump-dom")
    groups = ["pool_side", "target_side", "method_infdist", "method_uniform"]
    assert "Global asset lineage" in lineage
    assert not [g for g in groups if g not in lineage], f"lineage graph lacks groups; DOM starts {lineage[:300]!r}"
    # the asset catalog, tall enough that its virtualised list renders every row
    listing = _chromium(f"{base}/assets", tmp_path / "p2", "--dump-dom", height=6000)
    missing = [a for a in EXPECTED + ["target_gradients", "selected_subset", "eval_scores"] if a not in listing]
    assert not missing, f"the asset catalog page lacks {missing}"
    shot = tmp_path / "asset_graph.png"
    _chromium(f"{base}/locations/infdist/asset-groups/pool_side", tmp_path / "p3", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000, "the screenshot is missing or blank"
    keep = ROOT / "data" / "ui"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "asset_graph.png")
