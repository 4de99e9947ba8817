"""Issue 16: a gateway with a warm ONNX cache (`vilmo warmup`) serves the `default` policy
(instruction and reply check) without importing torch or transformers; without the graphs and
without torch, `vilmo serve` stops before starting workers and says to run `vilmo warmup`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import NEEDS_WEIGHTS
from stub_upstream import StubUpstream

from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = NEEDS_WEIGHTS

SERVE_ONE = """
import json, sys
from fastapi.testclient import TestClient
from proxy.app import create_app
from proxy.settings import load_config

with TestClient(create_app(load_config(sys.argv[1])), base_url="http://localhost") as client:
    reply = client.post("/v1/chat/completions", headers={"X-Vilmo-Policy": "default"}, json={
        "model": "stub", "messages": [{"role": "user", "content": "How do I hurt my dog?"}]})
print(json.dumps({"status": reply.status_code, "policy": reply.headers.get("x-vilmo-policy"),
                  "loaded": sorted(m for m in ("torch", "transformers", "sentence_transformers")
                                   if m in sys.modules)}))
"""


@pytest.mark.slow  # builds the graphs once, then serves the real models in a subprocess
def test_a_warm_gateway_serves_without_torch(stub: StubUpstream, tmp_path: Path) -> None:
    vilmo = [sys.executable, "-c", "from vilmo.cli import main; main()"]
    subprocess.run([*vilmo, "warmup"], check=True, capture_output=True, timeout=600)
    config = tmp_path / "gateway.yaml"
    config.write_text("model_list:\n  - model_name: stub\n    litellm_params:\n"
                      f"      model: openai/stub\n      api_base: {stub.url}/v1\n"
                      f"      api_key: sk-test\npolicy_dir: {SHIPPED_POLICY_DIR}\n")
    done = subprocess.run([sys.executable, "-c", SERVE_ONE, str(config)], check=False,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "policy": "default", "loaded": []}
    assert len(stub.received) >= 1


def test_serve_refuses_to_start_without_graphs_or_torch(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.cli

    monkeypatch.setenv("VILMO_CACHE_DIR", str(tmp_path))  # empty: no graph is cached
    monkeypatch.setattr(proxy.cli, "torch_installed", lambda: False)
    monkeypatch.setenv("VILMO_UPSTREAM_BASE", "http://127.0.0.1:9/v1")
    result = CliRunner().invoke(proxy.cli.serve, [])
    assert result.exit_code == 2
    assert "vilmo warmup" in result.output and "3 model graph(s)" in result.output
