"""LiteLLM's HTTP clients as a gateway needs them: they keep no cookie and follow no redirect.

An upstream client serves every caller (LiteLLM caches its clients per deployment and event
loop), and holds the config's credentials. A cookie an upstream sets must not ride on anyone's
later request; a redirect must not take the prompt and the credential headers (``api_key``,
``extra_headers`` such as ``X-Upstream-Token`` or Azure's ``api-key``: httpx drops only
``Authorization`` across origins) to wherever the upstream points. The direct path's client is
built so (``proxy.direct``); LiteLLM's are made so here, where they are built, once: each keeps
its transport, TLS, proxies and pooling. A redirect is then the upstream's answer, a 3xx the
gateway maps as the direct path does (``proxy.errors``).

Each also bounds what it reads of a reply as the direct path does (``proxy.upstream_bounds``:
its size, one stream event's, a plain reply's deadline, an error body's text).

LiteLLM's ``aiohttp_openai`` provider builds none of these (it calls with aiohttp): no request
reaches it. A wildcard deployment hands LiteLLM a model made of the client's name (``*`` to
``*``, or more wildcards in ``model_name`` than in ``model``: the name as it came), so such a
name is refused before routing (``refuse_unbounded_model``, a 400), and every attempt LiteLLM
starts with that provider fails at once (``proxy.litellm_attempts``).

``litellm.aclient_session`` is not used instead: one client for all would lose LiteLLM's
per-loop clients and its transport settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

from proxy.upstream_bounds import bound_responses

OWNED = "owned_by_vilmo"
"""The mark on a wrapped factory, so wrapping twice changes nothing."""


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing: an upstream client serves every caller, so a cookie
    an upstream sets must not ride on anyone's later requests."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def own_litellm_clients() -> None:
    """Every httpx client LiteLLM builds for an upstream call, sync or async, streaming or
    not: the openai SDK's (openai/, azure/ and OpenAI-compatible providers: ``BaseOpenAILLM``'s
    two factories) keep no cookie and follow no redirect; those of LiteLLM's own handlers
    (every other provider: ``AsyncHTTPHandler``, ``HTTPHandler``), which keep no cookie
    already, follow no redirect either. Every openai SDK client is made so as it is built
    (``_own_sdk_client``), whatever built its httpx client: LiteLLM also builds some itself
    (``OpenAIAsyncHTTPClient()`` for Azure through Cloudflare AI Gateway, workload identity),
    and the SDK its own when given none."""
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler
    from litellm.llms.openai.common_utils import BaseOpenAILLM
    from openai._base_client import AsyncAPIClient, SyncAPIClient

    from proxy.litellm_attempts import watch_attempts

    watch_attempts()

    for name in ("_get_async_http_client", "_get_sync_http_client"):
        _wrap(BaseOpenAILLM, name, staticmethod, cookies=True)
    for handler in (AsyncHTTPHandler, HTTPHandler):
        _wrap(handler, "create_client", lambda f: f, cookies=False)
    for sdk in (SyncAPIClient, AsyncAPIClient):
        _own_sdk_client(sdk)


def _own_sdk_client(api: type) -> None:
    """``api.__init__`` (the openai SDK's base of ``OpenAI``, ``AzureOpenAI`` and their async
    twins) wrapped so that the httpx client it sends with (``_client``, given or its own)
    keeps no cookie and follows no redirect: the SDK sends each request with the client's
    default."""
    init = api.__init__  # type: ignore[misc]  # the class's own, wrapped in place
    if getattr(init, OWNED, False):
        return

    def owned(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        client = getattr(self, "_client", None)
        if client is not None:
            client.cookies = no_cookies()
            client.follow_redirects = False
            bound_responses(client)

    setattr(owned, OWNED, True)
    api.__init__ = owned  # type: ignore[misc]


def _wrap(owner: type, name: str, bind: Callable[[Any], Any], *, cookies: bool) -> None:
    """``owner.name``, a client factory, wrapped so that its client keeps no cookie (when
    ``cookies``) and follows no redirect (``follow_redirects`` is the client's default for
    each request it sends: the openai SDK and LiteLLM's handlers leave it to the client)."""
    make = getattr(owner, name)
    if getattr(make, OWNED, False):
        return

    def owned(*args: Any, **kwargs: Any) -> Any:
        client = make(*args, **kwargs)
        if client is not None:
            if cookies:
                client.cookies = no_cookies()
            client.follow_redirects = False
            bound_responses(client)
        return client

    setattr(owned, OWNED, True)
    setattr(owner, name, bind(owned))


def refuse_unbounded_model(deployments: Iterable[Mapping[str, Any]], requested: str,
                           defaults: Mapping[str, Any] | None) -> None:
    """A 400 (``proxy.litellm_attempts.UnboundedModel``) when LiteLLM's Router could serve
    ``requested`` with an unbounded provider: each deployment (the Router's ``model_list``;
    those named ``requested`` exactly, else all) as the Router calls it for that name
    (``for_requested_model``: a wildcard's groups filled in, or the name as it came when its
    ``model_name`` has more wildcards than its ``model``), under the Router's
    ``default_litellm_params`` either way round (a deployment it leaves as configured was
    checked at load). Refused before routing, a client's name costs the deployment no failure
    (LiteLLM's cooldowns count failed attempts)."""
    from litellm.router_attempt import for_requested_model

    from proxy.litellm_attempts import refuse_unbounded

    listed = list(deployments)
    exact = [d for d in listed if d.get("model_name") == requested]
    for deployment in exact or filter(_wildcard, listed):
        served = for_requested_model(deployment, requested)
        params = served.get("litellm_params")
        if served is not deployment and isinstance(params, Mapping):  # else checked at load
            orders = [{**params, **defaults, "model": params.get("model")},
                      {**defaults, **params}] if defaults else [params]
            for merged in orders:
                refuse_unbounded(merged, requested, ask_litellm=False)


def _wildcard(deployment: Mapping[str, Any]) -> bool:
    """Whether the Router may fill in ``deployment``'s model from a requested name (its name,
    or its team's public name, has a ``*``): ``for_requested_model`` leaves any other as it is."""
    info = deployment.get("model_info")
    public = info.get("team_public_model_name") if isinstance(info, Mapping) else None
    return "*" in str(deployment.get("model_name")) or "*" in str(public or "")
