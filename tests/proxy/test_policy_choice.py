"""Which policy a key may choose with ``X-Vilmo-Policy`` (``proxy.key_config``): a key bound to
a policy could name any loaded one with ``allow_policy_header``, one with no checks too, and so
leave the policy its operator bound it to. Now it names its bound policy or those its
``policies`` lists; any other is a 403 in the OpenAI envelope (``policy_not_allowed``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import fake_services, post_chat
from pydantic import ValidationError

from proxy.key_config import KeyBinding
from proxy.settings import AuthSettings
from vilmo.instruct.principles import PrincipleBank

BODY: dict[str, object] = {"model": "stub", "messages": [{"role": "user", "content": "Hi"}]}
BOUND = "sk-bound-0123456789"
LISTED = "sk-listed-0123456789"
ANY = "sk-any-0123456789"
OFF = "sk-off-0123456789"
BOUND_ONLY = "sk-bound-only-0123456789"


def keys() -> AuthSettings:
    return AuthSettings(keys=[
        KeyBinding(key=BOUND, name="bound", policy="strict-care-fairness",
                   allow_policy_header=True),  # written before `policies` existed
        KeyBinding(key=LISTED, name="listed", policy="strict-care-fairness",
                   allow_policy_header=True, policies=["default"]),
        KeyBinding(key=ANY, name="any", allow_policy_header=True, policies=["*"]),
        KeyBinding(key=BOUND_ONLY, name="bound-only", policy="strict-care-fairness"),
        KeyBinding(key=OFF, name="off", allow_policy_header=True),  # bound to the default
    ])


def chat(policy_dir: Path, bank: PrincipleBank, key: str, policy: str) -> httpx.Response:
    services = fake_services(policy_dir, bank)
    services.config.auth = keys()
    headers = {"authorization": f"Bearer {key}", "x-vilmo-policy": policy}
    reply: httpx.Response = asyncio.run(post_chat(services, BODY, headers))
    return reply


def policy_of(reply: httpx.Response) -> str:
    assert reply.status_code == 200, reply.text
    return reply.headers["x-vilmo-policy"]


@pytest.mark.parametrize("key, policy, code", [
    (BOUND, "default", "policy_not_allowed"),  # the reported escape: any loaded policy
    (BOUND, "schwartz-egalitarian", "policy_not_allowed"),
    (BOUND, "nope", "policy_not_allowed"),  # unknown or not: no policy names are told
    (LISTED, "schwartz-egalitarian", "policy_not_allowed"),
    (OFF, "strict-care-fairness", "policy_not_allowed"),
    (BOUND_ONLY, "strict-care-fairness", "policy_override_forbidden"),  # no header at all
])
def test_a_key_may_not_choose_a_policy_outside_its_list(
        policy_dir: Path, bank: PrincipleBank, key: str, policy: str, code: str) -> None:
    reply = chat(policy_dir, bank, key, policy)
    assert reply.status_code == 403, reply.text
    error = reply.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "permission_error", code, "X-Vilmo-Policy")
    assert "known" not in error["message"]


@pytest.mark.parametrize("key, policy", [
    (BOUND, "strict-care-fairness"),  # its bound policy, by name
    (LISTED, "strict-care-fairness"), (LISTED, "default"),
    (ANY, "schwartz-egalitarian"), (ANY, "default"),
    (OFF, "default"),  # bound to none: the default policy
])
def test_a_key_may_choose_its_bound_policy_and_its_list(
        policy_dir: Path, bank: PrincipleBank, key: str, policy: str) -> None:
    assert policy_of(chat(policy_dir, bank, key, policy)) == policy


def test_an_unknown_policy_lists_only_what_the_key_may_choose(
        policy_dir: Path, bank: PrincipleBank) -> None:
    services = fake_services(policy_dir, bank)
    services.config.auth = AuthSettings(keys=[KeyBinding(
        key=LISTED, name="listed", policy="strict-care-fairness", allow_policy_header=True,
        policies=["default", "gone"])])
    reply = asyncio.run(post_chat(services, BODY, {"authorization": f"Bearer {LISTED}",
                                                   "x-vilmo-policy": "gone"}))
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    assert message.endswith("known: default, strict-care-fairness"), message


@pytest.mark.parametrize("binding, problem", [
    ({"policies": ["default"]}, "needs `allow_policy_header: true`"),
    ({"allow_policy_header": True, "policies": ["*", "default"]}, "list no others"),
])
def test_a_list_the_key_cannot_use_is_a_config_error(binding: dict[str, Any],
                                                     problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        KeyBinding.model_validate({"key": BOUND, "name": "k", **binding})
