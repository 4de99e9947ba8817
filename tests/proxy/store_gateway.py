"""Gateways with an admin key and a store of their own (SQLite in a temporary folder, or the real
Redis under a test prefix), served by uvicorn like the session gateway, for the admin API,
virtual keys, limits and the audit trail through the gateway."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import gateway_config_dict

sys.path.insert(0, str(Path(__file__).parent / "store"))
from store_fixtures import SHARED_REDIS, RedisProcess, _delete_prefix, own_redis_fixture

__all__ = ["SHARED_REDIS", "RedisProcess", "_delete_prefix", "own_redis_fixture"]

ADMIN = "sk-vilmo-admin-test-0123456789abcdef"


def store_config(stub_url: str, policy_dir: Path, store: dict[str, Any],
                 **extra: Any) -> dict[str, Any]:
    config = gateway_config_dict(stub_url, policy_dir)
    config["auth"]["admin_key"] = ADMIN
    config["store"] = store
    config.pop("audit")
    return config | extra


@contextmanager
def serve_gateway(config_dict: dict[str, Any], classifier: Any) -> Iterator[str]:
    """The gateway's root URL (no /v1)."""
    from stub_upstream import ServerThread

    from proxy.app import create_app
    from proxy.services import build_services
    from proxy.settings import GatewayConfig

    config = GatewayConfig.model_validate(config_dict)
    app = create_app(config, lambda c: build_services(c, lambda policy: classifier))
    with ServerThread(app) as server:
        yield server.url


@pytest.fixture(name="store_backend", params=["sqlite", "redis"])
def store_backend_fixture(request: pytest.FixtureRequest, tmp_path: Path,
                          ) -> Iterator[dict[str, Any]]:
    """The ``store:`` section: SQLite in tmp_path, or the shared Redis under a fresh prefix."""
    if request.param == "sqlite":
        yield {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
        return
    prefix = f"vilmo-gw-test-{secrets.token_hex(6)}"
    yield {"url": SHARED_REDIS, "prefix": prefix, "spool_dir": str(tmp_path / "spool")}
    _delete_prefix(SHARED_REDIS, prefix)


def admin(method: str, url: str, key: str = ADMIN, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, headers={"authorization": f"Bearer {key}"}, timeout=10,
                         **kwargs)


def chat(base: str, key: str, text: str = "Hello there", **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {key}", **headers},
                      json={"model": "stub", "messages": [{"role": "user", "content": text}]})


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def audit_ids(base: str, **filters: str) -> list[str]:
    """Every record id of the trail (all pages), newest first."""
    ids: list[str] = []
    after: str | None = None
    while True:
        params = {**filters, "limit": "100", **({"after": after} if after else {})}
        page = admin("GET", f"{base}/admin/audit", params=params).json()
        ids += [r["id"] for r in page["data"]]
        after = page["next"]
        if after is None:
            return ids


@pytest.fixture(name="base")
def keyed_gateway_fixture(stub: Any, policy_dir: Path, classifier: Any,
                          store_backend: dict[str, Any]) -> Iterator[str]:
    """A served gateway on the store under test (``store_backend``), for keys an admin makes."""
    with serve_gateway(store_config(stub.url, policy_dir, store_backend), classifier) as url:
        yield url


def new_key(base: str, tpm: int) -> str:
    """A virtual key with a ``tpm`` limit, made through the admin API."""
    reply = admin("POST", f"{base}/admin/keys", json={"name": "tenant", "tpm": tpm})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["key"])


def burst(base: str, key: str, body: dict[str, Any], count: int) -> list[httpx.Response]:
    """``count`` requests of ``body`` on ``key`` at once."""
    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(
                f"{base}/v1/chat/completions", json=body,
                headers={"authorization": f"Bearer {key}"}) for _ in range(count)))

    return asyncio.run(send())
