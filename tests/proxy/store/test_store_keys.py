"""Virtual keys on both backends: shown once, stored hashed, refused once revoked, on every
replica."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
import redis
from store_fixtures import (
    SHARED_REDIS,
    MakeStore,
    backend_fixture,  # noqa: F401 - a fixture
    make_store_fixture,  # noqa: F401 - a fixture
    store_fixture,  # noqa: F401 - a fixture
)

from proxy.client_keys import VerifiedKeys
from proxy.store import AuditRecord, Store, StoreSettings, VirtualKey, open_store
from proxy.store import keys as keys_module
from proxy.store.keys import parse_key


def test_create_returns_the_key_once_and_lookup_finds_it(store: Store) -> None:
    issued = store.create_key("team-a", policy="strict", rpm=10, tpm=1000)
    assert issued.key.startswith(f"vk-{issued.record.id}-")
    assert issued.public() == {"id": issued.record.id, "name": "team-a", "key": issued.key,
                               "policy": "strict", "rpm": 10, "tpm": 1000}
    found = store.find_key(issued.key)
    assert found == issued.record
    assert (found.name, found.policy, found.rpm, found.tpm) == ("team-a", "strict", 10, 1000)
    listed = store.list_keys()
    assert [k.id for k in listed] == [issued.record.id]
    assert listed[0].public() == {"id": issued.record.id, "name": "team-a", "policy": "strict",
                                  "profile": None, "rpm": 10, "tpm": 1000,
                                  "created_at": issued.record.created_at, "revoked_at": None}


@pytest.mark.parametrize("presented", [
    "", "vk-", "sk-team-a-0123456789", "vk-0123456789abcdef-" + "A" * 43,
    "vk-0123456789abcdef", "x" * 10_000])
def test_malformed_or_unknown_keys_are_refused(store: Store, presented: str) -> None:
    store.create_key("team-a")
    assert store.find_key(presented) is None


def test_a_wrong_secret_for_a_real_id_is_refused(store: Store) -> None:
    issued = store.create_key("team-a")
    key_id, secret = parse_key(issued.key) or ("", "")
    assert store.find_key(f"vk-{key_id}-{secret[:-1]}{'B' if secret[-1] != 'B' else 'C'}") is None
    assert store.find_key(issued.key) is not None


def test_revoked_keys_are_refused_on_every_replica(make_store: MakeStore) -> None:
    one, two = make_store(), make_store()
    issued = one.create_key("team-a")
    assert two.find_key(issued.key) is not None
    assert two.revoke_key(issued.record.id)
    assert one.find_key(issued.key) is None
    assert two.find_key(issued.key) is None
    first = one.get_key(issued.record.id)
    assert first is not None and first.revoked_at is not None
    assert one.revoke_key(issued.record.id)
    again = one.get_key(issued.record.id)
    assert again is not None and again.revoked_at == first.revoked_at
    assert not one.revoke_key("0000000000000000")


def test_bind_and_set_limits_are_seen_by_other_replicas(make_store: MakeStore) -> None:
    one, two = make_store(), make_store()
    issued = one.create_key("team-a")
    bound = one.bind_key(issued.record.id, policy="strict", profile="care-first")
    assert bound is not None and (bound.policy, bound.profile) == ("strict", "care-first")
    limited = two.set_limits(issued.record.id, rpm=5, tpm=None)
    assert limited is not None and (limited.rpm, limited.tpm) == (5, None)
    seen = one.find_key(issued.key)
    assert seen is not None
    assert (seen.policy, seen.profile, seen.rpm, seen.tpm) == ("strict", "care-first", 5, None)
    cleared = two.bind_key(issued.record.id, policy=None, profile=None)
    assert cleared is not None and (cleared.policy, cleared.profile) == (None, None)
    assert one.bind_key("0000000000000000", policy="x", profile=None) is None
    assert one.set_limits("0000000000000000", rpm=1, tpm=1) is None


@pytest.mark.parametrize(("name", "rpm"), [("", None), ("x" * 129, None), ("a", 0), ("a", -1)])
def test_bad_key_fields_are_refused(store: Store, name: str, rpm: int | None) -> None:
    with pytest.raises(ValueError):
        store.create_key(name, rpm=rpm)


def test_only_a_salted_hash_is_stored(backend: str, store: Store, tmp_path: Path) -> None:
    issued = store.create_key("team-a")
    secret = (parse_key(issued.key) or ("", "unparsable"))[1]
    if backend == "sqlite":
        db = sqlite3.connect(tmp_path / "state.db")
        dumped = "\n".join(db.iterdump())
        db.close()
    else:
        client = redis.Redis.from_url(SHARED_REDIS)
        prefix = store.settings.prefix
        dumped = repr([client.dump(k) for k in client.scan_iter(match=f"{prefix}:*")])
        client.close()
    assert issued.key not in dumped and secret not in dumped
    assert issued.record.id in dumped


def test_keys_survive_a_restart(make_store: MakeStore) -> None:
    first = make_store()
    issued = first.create_key("team-a", rpm=3)
    first.close()
    assert make_store().find_key(issued.key) == issued.record


def test_a_taken_id_is_never_overwritten(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    first = store.create_key("first")
    fresh = keys_module.mint_key()
    taken = keys_module.MintedKey(first.record.id, "vk-x", fresh.salt, fresh.digest)
    draws = iter([taken, fresh])
    monkeypatch.setattr(keys_module, "mint_key", lambda: next(draws))
    second = store.create_key("second")
    assert second.record.id == fresh.id
    assert store.find_key(first.key) == first.record
    assert store.find_key(second.key) == second.record


def test_the_embedded_state_and_spool_are_private(tmp_path: Path) -> None:
    settings = StoreSettings(path=tmp_path / "state" / "state.db",
                             spool_dir=tmp_path / "spool")
    store = open_store(settings)
    store.create_key("team-a")
    store.audit.spool.append([AuditRecord(id="req-1", ts=1.0)])
    modes = {p.name: stat.S_IMODE(p.stat().st_mode)
             for p in [*(tmp_path / "state").iterdir(), *(tmp_path / "spool").iterdir()]}
    store.close()
    assert modes and set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


def test_verified_keys_forget_a_revoked_key_by_its_id() -> None:
    verified = VerifiedKeys()
    for key_id in ("a", "b"):
        verified.remember(f"vk-{key_id}-secret", VirtualKey(key_id, key_id, None, None, None,
                                                            None, 0.0))
    verified.forget("a")
    assert verified.recall("vk-a-secret") is None
    recalled = verified.recall("vk-b-secret")
    assert recalled is not None and recalled.id == "b"
