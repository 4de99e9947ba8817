"""Requests a web page could make the operator's browser send: refused on the JSON routes.

A gateway without client keys (the quick start) serves whoever reaches it, and any page the
operator opens can POST to ``http://127.0.0.1:4000`` with a CORS "simple" request (a form, or
``Content-Type: text/plain``): the browser sends it with no preflight, and the gateway used to
read the body as JSON whatever its type and spend the operator's upstream key on it. So the
routes that read a JSON body (chat, check, the admin API's POST and PATCH: ``proxy.routes``'s
``read_bytes``) want ``Content-Type: application/json`` (parameters such as ``charset``
allowed), else a 415: a browser sends that type to another origin only after a preflight, which
the gateway never grants (it sends no CORS headers). A request the browser marks
``Sec-Fetch-Site: cross-site`` is a 403 whatever its type. Real clients send the JSON type: the
openai SDKs (and LangChain, LiteLLM through them), ``requests``' and httpx's ``json=``, and curl
with ``-H 'Content-Type: application/json'`` (curl's ``-d`` alone sends a form's type: a 415).
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import GatewayError, InvalidRequest

JSON_TYPE = "application/json"


class UnsupportedMediaType(InvalidRequest):
    """A JSON route's body sent with another Content-Type (or none)."""

    status = 415


class CrossSiteRequest(GatewayError):
    """The browser says a page on another site made the request (``Sec-Fetch-Site``)."""

    status = 403
    type = "permission_error"


def refuse_unless_json(headers: Mapping[str, str]) -> None:
    """Raise the 403 for a cross-site request, else the 415 for a body not typed JSON."""
    if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        raise CrossSiteRequest("a request from a page on another site (Sec-Fetch-Site: "
                               "cross-site) is refused", code="cross_site_request")
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != JSON_TYPE:
        raise UnsupportedMediaType(
            "the request body must be JSON sent with 'Content-Type: application/json'",
            param="Content-Type", code="unsupported_media_type")
