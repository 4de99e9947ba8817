"""Fixtures of the store tests, over both backends: SQLite in a temporary folder and the real
Redis on 127.0.0.1:6379 under a prefix of the test's own (its keys are deleted afterwards).

Test modules import the fixture functions (``store_fixture`` provides ``store``): a
``conftest.py`` here would be imported as the module ``conftest`` and shadow the root one, which
other test modules import from."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from proxy.store import Store, StoreSettings, open_store

SHARED_REDIS = "redis://127.0.0.1:6379/0"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

MakeStore = Callable[..., Store]


def _delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for name in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(name)
    finally:
        client.close()


@pytest.fixture(name="backend", params=["sqlite", "redis"])
def backend_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="make_store")
def make_store_fixture(backend: str, tmp_path: Path) -> Iterator[MakeStore]:
    """``make_store(**settings)``: another replica on the same state each call (same SQLite
    file or same Redis prefix), with a spool folder of its own."""
    prefix = f"vilmo-test-{secrets.token_hex(6)}"
    opened: list[Store] = []

    def make(**overrides: object) -> Store:
        fields: dict[str, object] = {"path": tmp_path / "state.db",
                                     "spool_dir": tmp_path / f"spool-{len(opened)}"}
        if backend == "redis":
            fields |= {"url": SHARED_REDIS, "prefix": prefix}
        store = open_store(StoreSettings.model_validate(fields | overrides))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
    if backend == "redis":
        _delete_prefix(SHARED_REDIS, prefix)


@pytest.fixture(name="store")
def store_fixture(make_store: MakeStore) -> Store:
    return make_store()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A redis-server of the test's own (never the shared one), with an AOF fsync'd on every
    write, so that a SIGKILL loses nothing Redis acknowledged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, as in a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture(name="own_redis")
def own_redis_fixture(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own (skipped where none is installed): for faults the
    shared Redis must not see (a kill, ``maxmemory``, which is global)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")
    server = RedisProcess(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.kill()


@pytest.fixture(name="full_redis")
def full_redis_fixture(own_redis: RedisProcess) -> Iterator[redis.Redis]:
    """A client of the test's own redis-server (``maxmemory`` is server-wide: never the shared
    one); ``full(client)`` puts it at ``maxmemory``."""
    client = redis.Redis(port=own_redis.port)
    yield client
    client.config_set("maxmemory", 0)
    client.close()


def full(client: redis.Redis) -> None:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
