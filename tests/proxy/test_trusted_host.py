"""DNS rebinding: a page on ``http://evil.example:4000`` whose name the attacker rebinds to
127.0.0.1 is same-origin to the operator's browser, so its JSON POSTs pass ``proxy.cross_site``;
a gateway without keys (the quick start) answered them, spending the operator's upstream key
with the reply readable by the page. Now the gateway answers only to allowed ``Host`` names:
by default loopback while anonymous, any once keys are required (``server.allowed_hosts`` to
choose), else 421 ``host_not_allowed`` in the OpenAI envelope, before the upstream is called."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import ADMIN_KEY, TEAM_KEY
from fakes import FakeUpstream, fake_services
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.settings import GatewayConfig
from proxy.trusted_host import host_name
from vilmo.instruct.principles import PrincipleBank

CHAT = json.dumps({"model": "stub", "messages": [{"role": "user", "content": "hi"}]})
REBOUND = {"origin": "http://evil.example:4000", "sec-fetch-site": "same-origin",
           "sec-fetch-mode": "cors", "content-type": "application/json"}
"""What the browser sends with a rebound page's own fetch: same-origin, JSON, no preflight."""


@contextmanager
def served(policy_dir: Path, bank: PrincipleBank, auth: dict[str, Any] | None = None,
           allowed_hosts: list[str] | None = None) -> Iterator[tuple[str, FakeUpstream]]:
    """The real app on a real server (127.0.0.1), fakes behind its model seams."""
    server: dict[str, Any] = {"policy_reload_interval_s": 0}
    if allowed_hosts is not None:
        server["allowed_hosts"] = allowed_hosts
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "stub", "litellm_params": {"model": "openai/stub-model"}}],
        "policy_dir": str(policy_dir), "default_policy": "default", "auth": auth or {},
        "server": server})
    upstream = FakeUpstream()
    services = fake_services(policy_dir, bank, upstream)
    services.config = config
    with ServerThread(create_app(config, lambda _: services)) as thread:
        yield thread.url, upstream


@pytest.fixture(name="open_gateway", scope="module")
def open_gateway_fixture(policy_dir: Path, bank: PrincipleBank,
                         ) -> Iterator[tuple[str, FakeUpstream]]:
    """The quick start: no key configured, every caller anonymous."""
    with served(policy_dir, bank) as gateway:
        yield gateway


def port_of(url: str) -> int:
    return httpx.URL(url).port or 80


def refused(response: httpx.Response) -> None:
    assert response.status_code == 421, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["evil.example:4000", "evil.example", "localhost.evil.example",
                                  "127.0.0.1.nip.io:4000", "EVIL.example.:80"])
def test_a_rebound_page_cannot_spend_the_anonymous_gateways_key(
        open_gateway: tuple[str, FakeUpstream], host: str) -> None:
    url, upstream = open_gateway
    before = len(upstream.calls)
    response = httpx.post(f"{url}/v1/chat/completions", content=CHAT,
                          headers={**REBOUND, "host": host})
    refused(response)
    assert "access-control-allow-origin" not in response.headers
    assert len(upstream.calls) == before


@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/openapi.json", "/admin/keys"])
def test_nothing_else_is_read_under_a_rebound_name(open_gateway: tuple[str, FakeUpstream],
                                                   path: str) -> None:
    url, _ = open_gateway
    refused(httpx.get(f"{url}{path}", headers={"host": "evil.example:4000"}))


@pytest.mark.parametrize("host", ["", "[::1", "a:b:c", "::1", "host:port"])
def test_a_missing_or_malformed_host_is_refused(open_gateway: tuple[str, FakeUpstream],
                                                host: str) -> None:
    url, _ = open_gateway
    refused(httpx.get(f"{url}/v1/models", headers={"host": host}))


def test_two_host_headers_are_refused(open_gateway: tuple[str, FakeUpstream]) -> None:
    """Which one would a cache or a proxy in front have read? (A raw socket: httpx refuses
    to send two.)"""
    url, _ = open_gateway
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as connection:
        connection.sendall(f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{port_of(url)}\r\n"
                           "Host: evil.example\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 421 "), head
    assert json.loads(body)["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "localhost.", "[::1]"])
def test_loopback_names_are_served_on_any_port(open_gateway: tuple[str, FakeUpstream],
                                               host: str) -> None:
    url, _ = open_gateway
    for port in ("", f":{port_of(url)}", ":4000"):
        response = httpx.post(f"{url}/v1/chat/completions", content=CHAT,
                              headers={**REBOUND, "origin": f"http://{host}{port}",
                                       "host": f"{host}{port}"})
        assert response.status_code == 200, (host, port, response.text)


def test_the_official_client_is_served_by_localhost_and_127_0_0_1(
        open_gateway: tuple[str, FakeUpstream]) -> None:
    url, _ = open_gateway
    for name in ("127.0.0.1", "localhost"):
        client = openai.OpenAI(base_url=f"http://{name}:{port_of(url)}/v1", api_key="anything",
                               max_retries=0)
        reply = client.chat.completions.create(
            model="stub", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content


def test_healthz_answers_any_host_but_names_nothing_there(
        open_gateway: tuple[str, FakeUpstream]) -> None:
    """A load balancer's check may name an address; a rebound page learns no names."""
    url, _ = open_gateway
    outside = httpx.get(f"{url}/healthz", headers={"host": "10.0.0.7:4000"})
    assert outside.status_code == 200 and outside.json() == {"status": "ok"}
    inside = httpx.get(f"{url}/healthz").json()
    assert inside["status"] == "ok" and inside["models"] == ["stub"]


def test_a_keyed_gateway_answers_any_host_by_default(policy_dir: Path,
                                                     bank: PrincipleBank) -> None:
    """A rebound page has no key: keys keep a deployment under its real name working."""
    auth = {"keys": [{"key": TEAM_KEY, "name": "team"}]}
    with served(policy_dir, bank, auth) as (url, _):
        response = httpx.post(f"{url}/v1/chat/completions", content=CHAT, headers={
            "host": "gateway.example.com", "authorization": f"Bearer {TEAM_KEY}",
            "content-type": "application/json"})
        assert response.status_code == 200, response.text
        keyless = httpx.post(f"{url}/v1/chat/completions", content=CHAT,
                             headers={**REBOUND, "host": "evil.example:4000"})
        assert keyless.status_code == 401


@pytest.mark.parametrize("path", ["/metrics", "/openapi.json"])
def test_a_keyed_gateways_keyless_paths_are_served_to_loopback_names_only(
        policy_dir: Path, bank: PrincipleBank, path: str) -> None:
    """A rebound page needs no key for ``auth.public_paths``: /metrics names every tenant's key.
    So, ``allowed_hosts`` unset, those paths keep the loopback list even on a keyed gateway."""
    auth = {"admin_key": ADMIN_KEY, "keys": [{"key": TEAM_KEY, "name": "team-payroll"}],
            "public_paths": ["/healthz", "/metrics", "/openapi.json"]}
    with served(policy_dir, bank, auth) as (url, _):
        rebound = httpx.get(f"{url}{path}", headers={"host": "evil.example:4000"})
        refused(rebound)
        assert "team-payroll" not in rebound.text
        assert httpx.get(f"{url}{path}", headers={"host": "localhost:4000"}).status_code == 200
        keyed = httpx.get(f"{url}/v1/models", headers={
            "host": "gateway.example.com", "authorization": f"Bearer {TEAM_KEY}"})
        assert keyed.status_code == 200, keyed.text  # a keyed path: any name, as before
        health = httpx.get(f"{url}/healthz", headers={"host": "evil.example:4000"})
        assert health.status_code == 200 and health.json() == {"status": "ok"}
    with served(policy_dir, bank, auth, ["gateway"]) as (url, _):  # the operator's names
        response = httpx.get(f"{url}{path}", headers={"host": "gateway:4000"})
        assert response.status_code == 200, response.text


def test_allowed_hosts_names_exactly_what_is_served(policy_dir: Path,
                                                    bank: PrincipleBank) -> None:
    auth = {"keys": [{"key": TEAM_KEY, "name": "team"}]}
    allowed = ["gateway.example.com", "*.internal.example", "gateway", "[::1]"]
    with served(policy_dir, bank, auth, allowed) as (url, _):
        for host in ("gateway.example.com:443", "a.internal.example", "gateway:4000", "[::1]"):
            response = httpx.get(f"{url}/v1/models", headers={
                "host": host, "authorization": f"Bearer {TEAM_KEY}"})
            assert response.status_code == 200, (host, response.text)
        for host in ("internal.example", "evil.example", "127.0.0.1", "gateway.example.com.evil"):
            refused(httpx.get(f"{url}/v1/models", headers={
                "host": host, "authorization": f"Bearer {TEAM_KEY}"}))
    with served(policy_dir, bank, allowed_hosts=["*"]) as (url, _):
        response = httpx.post(f"{url}/v1/chat/completions", content=CHAT,
                              headers={**REBOUND, "host": "evil.example:4000"})
        assert response.status_code == 200  # the operator's choice


@pytest.mark.parametrize("entry", ["10.0.0.5:4000", "cafe:4000", "[::1]:4000", "localhost:4000"])
def test_an_allowed_hosts_entry_with_a_port_is_refused_saying_so(entry: str) -> None:
    """``10.0.0.5:4000`` passed as an address, then never matched (names are compared
    without their port): every request was a 421."""
    with pytest.raises(ValueError, match="allowed_hosts") as refused_entry:
        GatewayConfig.model_validate({
            "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
            "server": {"allowed_hosts": [entry]}})
    assert "no port" in str(refused_entry.value)


@pytest.mark.parametrize("entry", ["::1", "[::1]", "fe80::1", "10.0.0.5", "*", "*.example.com",
                                   "gateway"])
def test_an_allowed_hosts_address_or_name_is_accepted(entry: str) -> None:
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
        "server": {"allowed_hosts": [entry]}})
    assert config.server.allowed_hosts == [entry]


@pytest.mark.parametrize("entry", ["gateway.example.com:443", "http://gateway", "", "a b",
                                   "*evil", "gateway/v1"])
def test_an_allowed_hosts_entry_that_can_never_match_is_a_config_error(entry: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        GatewayConfig.model_validate({
            "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
            "server": {"allowed_hosts": [entry]}})


@pytest.mark.parametrize("header, name", [
    ("Example.COM:8080", "example.com"), ("example.com.", "example.com"), ("[::1]:4000", "::1"),
    ("[::1]", "::1"), ("127.0.0.1", "127.0.0.1"), ("[::1]x", None), ("a:b", None),
    (":4000", None), ("", None)])
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name
