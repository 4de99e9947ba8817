"""Every admin answer carries ``Cache-Control: no-store``: the admin API's replies hold prompts,
replies and key metadata, which no browser or shared cache may keep. Only ``POST /admin/keys``
and ``/dashboard`` said so; ``GET /admin/keys``, ``/admin/audit``, ``/admin/audit/export`` and
``/admin/summary`` were cacheable, and so was every error. Checked on the real app over a real
server, for every admin route the app declares (so a new one is checked too) and for the
refusals of every layer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import TEAM_KEY
from fake_gateway import ADMIN, serve_fake_gateway
from fastapi.routing import APIRoute

from proxy.admin import admin, admin_router
from proxy.app import create_app

CLIENT = {"keys": [{"key": TEAM_KEY, "name": "team"}]}


@pytest.fixture(name="gateway", scope="module")
def gateway_fixture(policy_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                    ) -> Iterator[tuple[str, str]]:
    """The root URL, and the id of a key issued there; one chat request in the trail."""
    folder = tmp_path_factory.mktemp("no-store")
    store = {"path": str(folder / "state.db"), "spool_dir": str(folder / "spool")}
    with serve_fake_gateway(policy_dir, store, auth=CLIENT,
                            server={"max_body_bytes": 4096}) as (url, _):
        issued = httpx.post(f"{url}/admin/keys", json={"name": "bot"},
                            headers={"authorization": f"Bearer {ADMIN}"})
        httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {TEAM_KEY}"},
                   json={"model": "stub", "messages": [{"role": "user", "content": "secret"}]})
        yield url, issued.json()["id"]


def admin_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the admin routers declare."""
    return sorted((method, route.path) for route in [*admin.routes, *admin_router.routes]
                  if isinstance(route, APIRoute) for method in route.methods or ())


def no_store(response: httpx.Response) -> None:
    assert response.headers.get_list("cache-control") == ["no-store"], (
        response.request.method, response.request.url.path, response.status_code)


BODIES = {"POST": {"name": "another"}, "PATCH": {"rpm": 5}}


@pytest.mark.parametrize("method, path", admin_routes())
def test_every_admin_route_says_no_store(gateway: tuple[str, str], method: str,
                                         path: str) -> None:
    url, key_id = gateway
    if method == "DELETE":  # a key of its own to revoke
        key_id = httpx.post(f"{url}/admin/keys", json={"name": "gone"},
                            headers={"authorization": f"Bearer {ADMIN}"}).json()["id"]
    target = re.sub(r"\{key_id\}", key_id, path)
    body = BODIES.get(method)
    answers = [
        httpx.request(method, f"{url}{target}", json=body,
                      headers={"authorization": f"Bearer {ADMIN}"}),
        httpx.request(method, f"{url}{target}", json=body),  # 401
        httpx.request(method, f"{url}{target}", json=body,
                      headers={"authorization": f"Bearer {TEAM_KEY}"}),  # 403
        httpx.request(method, f"{url}{re.sub(r'{key_id}', 'nope', path)}", json=body,
                      headers={"authorization": f"Bearer {ADMIN}"}),  # 404 where a key is named
    ]
    assert answers[0].status_code < 300, answers[0].text
    if path.startswith("/admin"):  # the dashboard page asks for the key itself
        assert [a.status_code for a in answers[1:3]] == [401, 403]
    for answer in answers:
        no_store(answer)


@pytest.mark.parametrize("method, path, kwargs, status", [
    ("GET", "/admin/audit?limit=0", {}, 400),
    ("GET", "/admin/audit?since=yesterday", {}, 400),
    ("GET", "/admin/audit/export?key=a&key=b", {}, 400),
    ("GET", "/admin/summary?since=2&until=1", {}, 400),
    ("POST", "/admin/keys", {"content": b"{", "headers": {"content-type": "application/json"}},
     400),
    ("POST", "/admin/keys", {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415),
    ("POST", "/admin/keys", {"content": b"x" * 5000,
                             "headers": {"content-type": "application/json"}}, 413),
    ("GET", "/admin/nowhere", {}, 404),
    ("PUT", "/admin/keys", {}, 405),
    ("GET", "/dashboard", {}, 200),
])
def test_every_admin_refusal_says_no_store(gateway: tuple[str, str], method: str, path: str,
                                           kwargs: dict[str, object], status: int) -> None:
    url, _ = gateway
    headers = {"authorization": f"Bearer {ADMIN}", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    response = httpx.request(method, f"{url}{path}", headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    no_store(response)


def test_the_admin_api_switched_off_says_no_store_too(policy_dir: Path) -> None:
    from fakes import fake_services
    from stub_upstream import ServerThread

    from vilmo.instruct.principles import PrincipleBank

    services = fake_services(policy_dir, PrincipleBank.load())
    with ServerThread(create_app(services.config, lambda _: services)) as served:
        for path in ("/admin/keys", "/dashboard"):
            response = httpx.get(f"{served.url}{path}")
            assert response.status_code == 404
            no_store(response)
        assert "cache-control" not in httpx.get(f"{served.url}/healthz").headers
