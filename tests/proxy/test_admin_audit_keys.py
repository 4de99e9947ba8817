"""Who made a request, beyond doubt: audit records carry the virtual key's id (a name may be
shared, or mimic a config key or the names of callers without a key), the audit routes filter
by it, and the admin API refuses the names the gateway gives to others. Also the admin API's
400s for an unknown profile and for a summary window past any date."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import TEAM_KEY
from fake_gateway import serve_fake_gateway
from fakes import MemoryAudit
from store_gateway import admin, chat, store_backend_fixture, wait_for

from proxy.services import Services
from vilmo.policy_store import SHIPPED_POLICY_DIR

__all__ = ["store_backend_fixture"]
pytestmark = pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)

AUTH = {"keys": [{"key": TEAM_KEY, "name": "team-a"}]}


@pytest.fixture(name="served")
def served_fixture(store_backend: dict[str, Any]) -> Iterator[tuple[str, Services]]:
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store_backend, auth=AUTH) as served:
        yield served


def new_key(base: str, name: str, **fields: Any) -> dict[str, Any]:
    reply = admin("POST", f"{base}/admin/keys", json={"name": name, **fields})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def trail(base: str, **filters: str) -> list[dict[str, Any]]:
    reply = admin("GET", f"{base}/admin/audit", params=filters)
    assert reply.status_code == 200, reply.text
    return list(reply.json()["data"])


def test_records_name_the_virtual_key_by_its_id_and_the_trail_filters_by_it(
        served: tuple[str, Services]) -> None:
    base, services = served
    first, second = new_key(base, "team-b"), new_key(base, "team-b", rpm=1)  # one name, twice
    statuses = [chat(base, first["key"]).status_code, chat(base, second["key"]).status_code,
                chat(base, second["key"]).status_code,  # over its rpm: refused before the route
                chat(base, TEAM_KEY).status_code, chat(base, "sk-nobody-0123456789").status_code]
    assert statuses == [200, 200, 429, 200, 401]
    wait_for(lambda: len(trail(base)) == 5)
    by_key_id = {(r["key"], r["key_id"], r["data"]["status"]) for r in trail(base)}
    assert by_key_id == {("team-b", first["id"], "200"), ("team-b", second["id"], "200"),
                         ("team-b", second["id"], "429"), ("team-a", None, "200"),
                         ("unauthenticated", None, "401")}
    assert all(r["data"]["key_id"] == r["key_id"] for r in trail(base))  # the whole record too
    assert [r["data"]["status"] for r in trail(base, key_id=second["id"])] == ["429", "200"]
    assert [r["key_id"] for r in trail(base, key_id=first["id"])] == [first["id"]]
    assert trail(base, key_id="no-such-id") == []
    export = admin("GET", f"{base}/admin/audit/export", params={"key_id": first["id"]})
    assert [json.loads(line)["key_id"] for line in export.text.splitlines()] == [first["id"]]
    twice = admin("GET", f"{base}/admin/audit?key_id=a&key_id=b")
    assert twice.status_code == 400 and twice.json()["error"]["param"] == "key_id"
    assert isinstance(services.audit, MemoryAudit)  # the AuditSink's record (the JSON line)
    assert {r.key_id for r in services.audit.records} == {first["id"], second["id"], None}
    fields = list(services.audit.records[0].to_json())  # fields are added at the end only
    assert fields[fields.index("key_id") + 1:] == ["stream_mode", "enforced"]


@pytest.mark.parametrize("name", ["unauthenticated", "anonymous", "unidentified", "Anonymous",
                                  " unauthenticated ", "team-a", "TEAM-A"])
def test_names_the_gateway_gives_to_others_are_refused(served: tuple[str, Services],
                                                       name: str) -> None:
    base, _ = served
    reply = admin("POST", f"{base}/admin/keys", json={"name": name})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] | {"message": ""} == {
        "message": "", "type": "invalid_request_error", "param": "name",
        "code": "key_name_reserved"}
    assert admin("GET", f"{base}/admin/keys").json()["data"] == []


def test_other_names_are_still_free_and_may_be_shared(served: tuple[str, Services]) -> None:
    base, _ = served
    assert new_key(base, "team-a-bot")["name"] == "team-a-bot"
    assert new_key(base, "anonymous-users")["name"] == "anonymous-users"
    assert new_key(base, "team-a-bot")["id"] != new_key(base, "team-a-bot")["id"]


def test_an_unknown_profile_is_a_400_naming_profile(served: tuple[str, Services]) -> None:
    base, _ = served
    created = new_key(base, "team-c")
    for method, path in (("POST", "/admin/keys"), ("PATCH", f"/admin/keys/{created['id']}")):
        for field in ("policy", "profile"):
            body = {"name": "team-d"} if method == "POST" else {}
            reply = admin(method, f"{base}{path}", json=body | {field: "nope"})
            assert reply.status_code == 400, reply.text
            assert reply.json()["error"]["param"] == field, (method, field)
            assert reply.json()["error"]["code"] == "policy_not_found"


@pytest.mark.parametrize(("query", "param"), [
    ("since=-1.7e308&until=1.7e308", "until"), ("since=-1e308&until=1e308&bucket=1", "until"),
    ("since=0&until=1e300", "until"), ("since=1e20", "since"), ("until=1e20", "until"),
    ("since=-1e12&until=0", "since")])
def test_a_summary_window_past_any_date_is_a_400(served: tuple[str, Services], query: str,
                                                 param: str) -> None:
    """Before the fix ``since=-1.7e308&until=1.7e308`` spanned infinite seconds: a 200 with
    ``bucket: null``."""
    base, _ = served
    reply = admin("GET", f"{base}/admin/summary?{query}")
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param
    assert reply.json()["error"]["code"] == "invalid_request"
    ok = admin("GET", f"{base}/admin/summary?since=0&until=2000000000")
    assert ok.status_code == 200 and ok.json()["bucket"] > 0

