"""Virtual client keys: ``vk-<id>-<secret>``.

The id in the key makes a lookup one read (no scan over every stored hash); only a salted hash
of the secret is stored. The secret is 256 random bits, so one SHA-256 is the right hash: slow
password hashes (scrypt, argon2) protect guessable passwords and would cost every request
milliseconds for nothing here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "vk-"
ID_HEX = 16
MAX_KEY_CHARS = 128
"""Longer presented keys are refused before any hashing or store access."""

_KEY = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{{ID_HEX}}})-([A-Za-z0-9_-]{{32,64}})$")


@dataclass(frozen=True, slots=True)
class MintedKey:
    """A new key: the plaintext for the caller once, the salt and hash for the store."""

    id: str
    key: str
    salt: str
    digest: str


def mint_key() -> MintedKey:
    key_id = secrets.token_hex(ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return MintedKey(key_id, f"{KEY_PREFIX}{key_id}-{secret}", salt, hash_secret(salt, secret))


def parse_key(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None (no store access for garbage)."""
    if len(presented) > MAX_KEY_CHARS:
        return None
    match = _KEY.match(presented)
    return (match.group(1), match.group(2)) if match else None


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def secret_matches(salt: str, digest: str, secret: str) -> bool:
    """Constant-time comparison, so response timing does not reveal the hash."""
    return hmac.compare_digest(hash_secret(salt, secret), digest)


def looks_like_virtual_key(presented: str) -> bool:
    """Whether a bearer token is for the store (the gateway's static keys are not)."""
    return presented.startswith(KEY_PREFIX)
