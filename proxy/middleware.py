"""Pure-ASGI guards in front of the routes: the client's API key, and the body size limit.

Keys are compared with ``hmac.compare_digest``. The caller found for a key is put in
``scope["state"]["caller"]`` for the routes.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import AuthenticationFailed, GatewayError, PayloadTooLarge
from proxy.settings import AuthSettings, KeyBinding

PROTECTED_PREFIX = "/v1/"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the tenant, its bound policy, and whether it may pick another."""

    name: str
    policy: str | None
    allow_policy_header: bool


async def send_error(send: Send, error: GatewayError) -> None:
    """Answer with an OpenAI error envelope, outside any framework."""
    body = json.dumps(error.envelope()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class KeyAuth:
    """Resolves ``Authorization: Bearer KEY`` to a Caller; 401 when keys are configured and it
    is missing or unknown. Without configured keys every caller is anonymous."""

    def __init__(self, app: ASGIApp, settings: AuthSettings) -> None:
        self.app = app
        self.bindings: Sequence[KeyBinding] = settings.keys
        self.anonymous = Caller("anonymous", None, settings.allow_policy_header)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        caller = self.anonymous
        if self.bindings:
            found = self._lookup(_bearer(scope))
            if found is None:
                await send_error(send, AuthenticationFailed(
                    "missing or invalid API key: send 'Authorization: Bearer <key>'",
                    code="invalid_api_key"))
                return
            caller = found
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)

    def _lookup(self, key: str | None) -> Caller | None:
        if not key:
            return None
        match = None
        for binding in self.bindings:  # no early exit: timing does not depend on which key
            if hmac.compare_digest(binding.key.encode(), key.encode()):
                match = binding
        if match is None:
            return None
        return Caller(match.name, match.policy, match.allow_policy_header)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class BodyLimit:
    """413 for request bodies over ``max_bytes``, by Content-Length or as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_error(send, too_large)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)
