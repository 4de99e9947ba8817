"""`vilmo serve` as a user runs it: a subprocess on its embedded defaults, then hot reload and
log redaction through the running gateway."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import ADMIN_KEY
from openai.types.chat import ChatCompletionMessageParam
from stub_upstream import StubUpstream, free_port

from proxy.errors import Redactor, install_log_redaction

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Should I lie to my boss about the deadline?"}]


@pytest.fixture(scope="module")
def served(stub: StubUpstream, real_models: None) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "VILMO_UPSTREAM_BASE": f"{stub.url}/v1"}
    env.pop("OPENAI_API_KEY", None)
    vilmo = Path(sys.executable).parent / "vilmo"
    process = subprocess.Popen([str(vilmo), "serve", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline, "vilmo serve did not start"
            time.sleep(0.2)
        yield f"{base}/v1"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_embedded_defaults_proxy_any_model_with_default_policy(served: str,
                                                               stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=served, api_key="anything")
    raw = client.chat.completions.with_raw_response.create(model="any-model-name",
                                                           messages=MESSAGES)
    assert raw.parse().choices[0].message.content == stub.reply
    assert raw.headers["x-vilmo-policy"] == "default"
    assert stub.last.body["model"] == "any-model-name"
    assert stub.last.body["messages"][0]["role"] == "system"


CLIENT_IDLE_EXPIRY_S = 5.0
"""How long httpx (and so the openai client) keeps an idle connection for reuse."""


def test_an_idle_connection_is_kept_past_the_clients_idle_expiry(served: str) -> None:
    """A client may reuse a connection idle for up to its expiry: a server closing it sooner
    (uvicorn's default: 5 s, the same as httpx's) fails requests that race the close."""
    host, port = served.removeprefix("http://").removesuffix("/v1").split(":")
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        assert _response(conn).startswith(b"HTTP/1.1 200")
        time.sleep(CLIENT_IDLE_EXPIRY_S + 1.0)
        conn.sendall(request)
        assert _response(conn).startswith(b"HTTP/1.1 200")


def _response(conn: socket.socket) -> bytes:
    """One HTTP response with a Content-Length body (b"" when the server closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n" + body


def test_new_policy_file_is_served_without_restart(gateway: str, policy_dir: Path,
                                                   stub: StubUpstream) -> None:
    (policy_dir / "hot.yaml").write_text(
        "name: hot\nvalues:\n  mft.loyalty: {weight: 1.0}\n"
        "instructions: {generator: static, text: 'Stay loyal to your friends.'}\n")
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY)
    deadline = time.monotonic() + 30  # a first reload pass only notes a new (maybe half-
    while time.monotonic() < deadline:  # written) file; passes run off the event loop
        health = httpx.get(f"{gateway.removesuffix('/v1')}/healthz",
                           headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
        if "hot" in health.get("policies", []):
            break
        time.sleep(0.1)
    raw = client.chat.completions.with_raw_response.create(
        model="stub", messages=MESSAGES, extra_headers={"X-Vilmo-Policy": "hot"})
    assert raw.headers["x-vilmo-policy"] == "hot"
    assert raw.headers["x-vilmo-principles"] == ""
    assert stub.last.body["messages"][0] == {"role": "system",
                                             "content": "Stay loyal to your friends."}
    (policy_dir / "hot.yaml").write_text("name: hot\nvalues: {}\n")  # broken: keeps last good
    raw = client.chat.completions.with_raw_response.create(
        model="stub", messages=MESSAGES, extra_headers={"X-Vilmo-Policy": "hot"})
    assert stub.last.body["messages"][0]["content"] == "Stay loyal to your friends."


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    factory = logging.getLogRecordFactory()
    install_log_redaction(Redactor(["sk-upstream-secret-xyz", "abc"]))
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("LiteLLM").info("calling with key %s and abc, abcdef",
                                              "sk-upstream-secret-xyz")
            try:
                raise RuntimeError("failed with sk-upstream-secret-xyz")
            except RuntimeError:
                logging.getLogger("LiteLLM").exception("call failed")
    finally:
        logging.setLogRecordFactory(factory)
    assert "sk-upstream-secret-xyz" not in caplog.text  # in messages and in tracebacks
    # A short secret is redacted as a whole token only: "abcdef" is left alone.
    assert "calling with key [redacted] and [redacted], abcdef" in caplog.text


def test_a_secret_across_a_logged_cut_is_redacted_before_the_cut(
        caplog: pytest.LogCaptureFixture) -> None:
    """Redact before you truncate: a message cut to 200 characters by its format must not keep
    the start of a secret that straddles the cut."""
    factory = logging.getLogRecordFactory()
    install_log_redaction(Redactor(["sk-upstream-secret-xyz"]))
    try:
        with caplog.at_level(logging.INFO):
            error = RuntimeError("x" * 190 + " sk-upstream-secret-xyz")
            logging.getLogger("proxy.middleware").error("unexpected error: %.200s", error)
    finally:
        logging.setLogRecordFactory(factory)
    assert "sk-upstre" not in caplog.text
    assert "x" * 190 + " [redacted" in caplog.text  # redacted, then cut to 200
