"""schemathesis over the gateway's own OpenAPI document (issue 16, reliability): generated
requests, valid and invalid, to every documented operation of a served gateway whose upstream
is the stub (any model name reaches it) and whose policy checks replies. No answer is a 5xx
but the mapped upstream ones (502, 503, 504), every error is the OpenAI envelope, and the
answers conform to the document (status codes, content types, schemas).

Bounded: ``MAX_EXAMPLES`` per operation and phase, no Hypothesis database (nothing written to
the checkout)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fault_gateway import fault_config, served
from hypothesis import HealthCheck, given, note, settings
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from stub_upstream import StubUpstream

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 10
CLIENT_KEY = "sk-fuzz-client-0123456789"
ADMIN_KEY = "sk-fuzz-admin-0123456789"
MAPPED_UPSTREAM_STATUSES = {502, 503, 504}
"""5xx statuses that report the upstream or the store, not a gateway failure."""



def gateway_document() -> dict[str, Any]:
    """The document as the app serves it (the routes alone: no services are built)."""
    from proxy.app import create_app
    from proxy.settings import Deployment, GatewayConfig

    config = GatewayConfig(model_list=[Deployment(model_name="*",
                                                  litellm_params={"model": "openai/*"})])
    app = create_app(config, lambda config: NotImplemented)
    return app.openapi()


@pytest.fixture(scope="module")
def served_document(fuzzed_gateway: str) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(
        f"{fuzzed_gateway}/openapi.json",
        headers={"Authorization": f"Bearer {CLIENT_KEY}"}).json()
    return document


OPERATIONS = [(method.upper(), path, mode)
              for path, methods in gateway_document()["paths"].items()
              for method, operation in methods.items()
              for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
              if mode == GenerationMode.POSITIVE or operation.get("parameters")
              or operation.get("requestBody")]
"""Every operation, with valid requests, and with invalid ones where it takes any input."""
DOMAIN_CODES = {"policy_not_found", "upstream_bad_request", "unreadable_input"}
"""400s a schema-valid request may get: names the document cannot list (policies reload),
what the upstream refuses by its own rules (LiteLLM's check of ``tool_choice``, for one), and
what a policy refuses to pass unread (a file part under ``checks.unreadable_parts: refuse``)."""
INTEGRAL_FLOAT = "Input should be a valid integer"
"""JSON Schema counts 2.0 as an integer; the gateway, strict, does not (nor does LiteLLM's
OpenAI client promise to send it on as one)."""
DOMAIN_PARAMS = {"since", "until", "after"}
"""Times in Unix seconds or ISO 8601, in that order (``since`` before ``until``); ``after``,
the cursor of an earlier page."""


@pytest.fixture(scope="module")
def fuzzed_gateway(stub: StubUpstream, tmp_path_factory: pytest.TempPathFactory,
                   ) -> Iterator[str]:
    from vilmo.policy_store import SHIPPED_POLICY_DIR

    policies = tmp_path_factory.mktemp("fuzz") / "policies"
    policies.mkdir()
    for path in SHIPPED_POLICY_DIR.glob("*.yaml"):
        (policies / path.name).write_text(path.read_text())
    config = fault_config(stub.url, policies, auth={
        "keys": [{"key": CLIENT_KEY, "name": "fuzzer", "allow_policy_header": True,
                  "policies": ["*"]}],
        "admin_key": ADMIN_KEY})
    with served(config, "litellm") as (url, _):
        yield url


def error_envelope(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx and 5xx is ``{"error": {"message", "type", "param", "code"}}``, and no 5xx
    but a mapped upstream error."""
    status = response.status_code
    if status >= 500:
        assert status in MAPPED_UPSTREAM_STATUSES, f"{status}: {response.text[:300]}"
    if status >= 400:
        error = json.loads(response.text)["error"]
        assert set(error) == {"message", "type", "param", "code"}, response.text[:300]
        assert isinstance(error["message"], str) and error["message"]
    return True


@pytest.mark.parametrize("method, path, mode", OPERATIONS)
def test_the_gateway_conforms_to_its_openapi(fuzzed_gateway: str, served_document: dict[str, Any],
                                             method: str, path: str, mode: GenerationMode,
                                             ) -> None:
    operation = schemathesis.openapi.from_dict(served_document)[path][method]
    key = ADMIN_KEY if path.startswith("/admin") else CLIENT_KEY

    def valid_requests_pass(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
        """schemathesis's positive_data_acceptance, less the domain rejections above."""
        if mode == GenerationMode.POSITIVE and response.status_code in (400, 422):
            error = json.loads(response.text)["error"]
            assert error["code"] in DOMAIN_CODES or error["param"] in DOMAIN_PARAMS \
                or INTEGRAL_FLOAT in error["message"], response.text[:300]
        return True

    def invalid_requests_refused(ctx: CheckContext, response: Response,
                                 case: Case[Any]) -> bool | None:
        """schemathesis's negative_data_rejection, and a 413: a body over the size limit is
        refused before it is read, whatever else is wrong with it."""
        if response.status_code == 413:
            return True
        return negative_data_rejection(ctx, response, case)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def conforms(case: Case[Any]) -> None:
        note(f"query={case.query!r} headers={case.headers!r} body={case.body!r}")
        case.call_and_validate(base_url=fuzzed_gateway, timeout=30,
                               headers={"Authorization": f"Bearer {key}"},
                               additional_checks=[error_envelope, valid_requests_pass,
                                                  invalid_requests_refused],
                               excluded_checks=[positive_data_acceptance,
                                                negative_data_rejection])

    conforms()


def test_every_body_route_documents_its_body(served_document: dict[str, Any]) -> None:
    document = served_document
    for path in ("/v1/chat/completions", "/v1/values/check"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        name = body["schema"]["$ref"].rsplit("/", 1)[1]
        assert "messages" in document["components"]["schemas"][name]["properties"]
    for operations in document["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]


