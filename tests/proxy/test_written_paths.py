"""Where the gateway writes, observed: the image gives its user (uid 10001) only the store's
folder, its home and the graph cache (``test_deploy``: simulated from the Dockerfile), so the
real gateway (real services and classifier, a keyed config as compose's, a chat request, the
admin API and ``/metrics``) must write nowhere else. A Python audit hook in a process of its
own records every file opened for writing, every folder made, every rename and removal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # real models

PROBE = r"""
import json, os, sys
attempts = []
WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir",
                "shutil.rmtree", "sqlite3.connect", "os.symlink", "os.link", "os.truncate"}

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        mode = args[1]
        writes = (any(c in mode for c in "wax+") if isinstance(mode, str) else
                  isinstance(mode, int) and bool(mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        if writes:
            attempts.append(os.fsdecode(args[0]))
    elif event in WRITE_EVENTS and isinstance(args[0], (str, bytes, os.PathLike)):
        attempts.append(os.fsdecode(args[0]))

sys.addaudithook(hook)
from fastapi.testclient import TestClient
from stub_upstream import ServerThread, StubUpstream
from proxy.app import create_app
from proxy.settings import GatewayConfig

state, admin, metrics, client_key = sys.argv[1], "a" * 32, "m" * 32, "k" * 24
stub = StubUpstream()
with ServerThread(stub.app()) as served:
    stub.url = served.url
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "*", "litellm_params": {
            "model": "openai/*", "api_key": "sk-x", "api_base": served.url + "/v1"}}],
        "auth": {"admin_key": admin, "metrics_key": metrics, "require_admin_key": True,
                 "keys": [{"key": client_key, "name": "team"}], "public_paths": ["/healthz"]},
        "store": {"path": state + "/state.db", "spool_dir": state + "/spool"}})
    with TestClient(create_app(config)) as client:
        statuses = [
            client.get("/healthz").status_code,
            client.post("/v1/chat/completions", headers={"authorization": "Bearer " + client_key},
                        json={"model": "gpt-x", "messages": [
                            {"role": "user", "content": "How do I get back at my brother?"}]}
                        ).status_code,
            client.get("/admin/audit", headers={"authorization": "Bearer " + admin}).status_code,
            client.get("/metrics", headers={"authorization": "Bearer " + metrics}).status_code]
print(json.dumps({"statuses": statuses, "attempts": sorted(set(attempts))}))
"""


def test_the_gateway_writes_only_its_state_and_its_graph_cache(tmp_path: Path) -> None:
    state, cache = tmp_path / "state", Path(os.environ.get("VILMO_CACHE_DIR") or
                                            Path.home() / ".cache" / "vilmo")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PROBE, str(state)], capture_output=True,
                          text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["statuses"] == [200, 200, 200, 200]
    mine = (str(state), str(cache), "/dev/")
    elsewhere = [path for path in seen["attempts"] if not path.startswith(mine)]
    assert elsewhere == [], elsewhere
    assert any(path.startswith(str(state)) for path in seen["attempts"])
