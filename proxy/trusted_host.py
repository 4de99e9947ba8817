"""The ``Host`` allow-list: a page that rebinds its own name to the gateway is refused.

DNS rebinding: a page on ``http://evil.example:4000`` makes its name resolve to 127.0.0.1;
the operator's browser then sends the page's requests to the gateway as *same-origin* (JSON,
no preflight, the reply readable by the page), so ``proxy.cross_site`` does not stop them. A
gateway without client keys (the quick start) would spend the operator's upstream key on
them. What the browser cannot hide is the name it asked for: the ``Host`` header is the
attacker's. So the gateway answers only to the names in ``server.allowed_hosts`` (any port;
``*.example.com`` for a domain's subdomains; ``"*"`` for any name), else a 421 Misdirected
Request (``code: host_not_allowed``): the request named an authority this server does not
serve. Unset, the list is the loopback names (``localhost``, ``127.0.0.1``, ``[::1]``) while
the gateway is anonymous, and any name once keys are required: a rebinding page has no key,
and a keyed deployment behind a real name keeps working as configured. But a rebinding page
needs no key for ``auth.public_paths`` (``/metrics`` names every tenant's key): unset, those
keep the loopback names on a keyed gateway too (``keyless_paths``).

``/healthz`` answers whatever the ``Host`` (a load balancer's check may name an address), but
with the bare status only: the policy and model names need an allowed ``Host``
(``host_trusted``).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.edge_protocols import EDGE_COUNTER
from proxy.errors import GatewayError
from proxy.middleware import send_error
from proxy.settings import GatewayConfig

ANY_HOST = "*"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""What an anonymous gateway answers to by default: names no page can rebind."""
EXEMPT_PATHS = frozenset({"/healthz"})
UNTRUSTED = "host_untrusted"
"""The request state's flag for an exempt path reached under a name not allowed."""
MAX_SHOWN_CHARS = 64


class HostNotAllowed(GatewayError):
    """The request's ``Host`` is not one the gateway serves (``server.allowed_hosts``)."""

    status = 421
    type = "invalid_request_error"


def allowed_hosts(config: GatewayConfig) -> tuple[str, ...]:
    """``server.allowed_hosts``; unset: loopback while no key is required, else any name
    (keys are required as ``proxy.middleware.KeyAuth`` requires them)."""
    if config.server.allowed_hosts is not None:
        return tuple(config.server.allowed_hosts)
    keyed = config.auth.keys_required
    return (ANY_HOST,) if keyed else LOOPBACK_HOSTS


def keyless_paths(config: GatewayConfig) -> frozenset[str]:
    """The paths served to loopback names only although ``allowed_hosts`` allows any: with the
    list unset, those a keyed gateway serves without a key (``auth.public_paths``, but the
    exempt ``/healthz``)."""
    if config.server.allowed_hosts is not None:
        return frozenset()
    return frozenset(config.auth.public_paths) - EXEMPT_PATHS


def host_name(header: str) -> str | None:
    """The name of a ``Host`` value (``name[:port]``, ``[v6]:port``), lower case, without a
    final dot; None when it is not one."""
    value = header.strip().lower()
    if value.startswith("["):  # an IPv6 address
        name, closed, port = value[1:].partition("]")
        if not closed or port and not port.startswith(":"):
            return None
        port = port[1:]
    else:
        name, _, port = value.partition(":")
    if not name or port and not port.isdigit():
        return None
    return name.removesuffix(".")


def host_trusted(scope: Scope) -> bool:
    """Whether the request came under an allowed name (False: an exempt path, reached under
    another name)."""
    return not scope.get("state", {}).get(UNTRUSTED, False)


class TrustedHost:
    """421 for a request whose ``Host`` is missing, repeated, or not allowed (pure ASGI,
    before any key is read)."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str],
                 loopback_paths: frozenset[str] = frozenset()) -> None:
        """``loopback_paths``: served to the loopback names only, whatever ``allowed`` says."""
        self.app = app
        entries = [entry.strip().lower().strip("[]").removesuffix(".") for entry in allowed]
        self.any = ANY_HOST in entries
        self.names = frozenset(e for e in entries if not e.startswith("*."))
        self.suffixes = tuple(e[1:] for e in entries if e.startswith("*."))
        self.loopback_paths = loopback_paths

    def allows(self, name: str, path: str = "") -> bool:
        if path in self.loopback_paths:
            return name in LOOPBACK_HOSTS
        return self.any or name in self.names or name.endswith(self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any and scope["path"] not in self.loopback_paths:
            await self.app(scope, receive, send)
            return
        values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        name = host_name(values[0]) if len(values) == 1 else None
        if name is not None and self.allows(name, scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["path"] in EXEMPT_PATHS:
            scope.setdefault("state", {})[UNTRUSTED] = True
            await self.app(scope, receive, send)
            return
        count = scope.get("state", {}).get(EDGE_COUNTER)  # the lifespan's (proxy.app)
        if count is not None:
            count("host_not_allowed")
        shown = values[0][:MAX_SHOWN_CHARS] if len(values) == 1 else f"{len(values)} values"
        await send_error(send, HostNotAllowed(
            f"this gateway does not serve the host {shown!r}: the Host must be one in "
            "server.allowed_hosts (unset, on a gateway without client keys or for a path "
            "served without a key: localhost, 127.0.0.1 or [::1])", code="host_not_allowed"))
