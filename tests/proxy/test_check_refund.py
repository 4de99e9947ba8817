"""A check refused before the judge reads it gives its key's ``tpm`` back. ``/v1/values/check``
charged the key first and never refunded: five checks naming a policy the key may not use (403)
left the next good check a 429, and a text too large for the key's policy (413) used up tokens
on every try. Now the policy is chosen before the charge, and a refusal that comes before the
judge reads the text (400, 403, 413) gives back what the check held."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
from fake_gateway import serve_fake_gateway
from store_gateway import admin

from vilmo.policy_store import SHIPPED_POLICY_DIR

TEXT = "Is it kind to tell him the truth?"  # about 10 tokens: five fit in a tpm of 50


def policies(folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(SHIPPED_POLICY_DIR / "default.yaml", folder / "default.yaml")
    (folder / "tiny.yaml").write_text(
        "name: tiny\nvalues:\n  mft.care: {weight: 1.0}\nchecks: {max_chars: 40}\n"
    )
    return folder


def new_key(base: str, **fields: Any) -> str:
    reply = admin("POST", f"{base}/admin/keys", json={"name": "tenant", "tpm": 50, **fields})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["key"])


def check(
    client: httpx.Client,
    base: str,
    key: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, str | None]:
    reply = client.post(
        f"{base}/v1/values/check",
        json=body,
        headers={"authorization": f"Bearer {key}", **(headers or {})},
    )
    return reply.status_code, reply.json().get("error", {}).get("code")


def test_checks_refused_before_the_judge_reads_them_cost_no_tokens(tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with (
        serve_fake_gateway(policies(tmp_path / "policies"), store) as (base, _),
        httpx.Client(timeout=10) as client,
    ):
        key = new_key(base)
        forbidden = [
            check(client, base, key, *named)
            for _ in range(3)
            for named in (
                ({"text": TEXT}, {"x-vilmo-policy": "default"}),
                ({"text": TEXT, "policy": "tiny"}, None),
            )
        ]
        assert {status for status, _ in forbidden} == {403}
        empty = [check(client, base, key, {"messages": []}) for _ in range(3)]
        assert {status for status, _ in empty} == {400}
        answered = [check(client, base, key, {"text": TEXT}) for _ in range(6)]
        assert answered == [(200, None)] * 5 + [(429, "tpm")]  # all 50 tokens were left

        tiny = new_key(base, policy="tiny")  # its policy checks at most 40 characters
        too_large = [check(client, base, tiny, {"text": "word " * 30}) for _ in range(4)]
        assert too_large == [(413, "check_too_large")] * 4  # each about 30 tokens, given back
        assert check(client, base, tiny, {"text": TEXT}) == (200, None)


def test_an_input_over_max_chars_is_refused_before_the_reply_is_read(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Final review: the reply was decoded (0.12 s for a heavy one) before the input's 413,
    which is refunded: a tpm-only key repeated that work for free. The input is counted first."""
    import proxy.check

    read: list[str] = []
    real = proxy.check._judged

    async def spy(text: str, *args: Any) -> Any:
        read.append(text)
        return await real(text, *args)

    monkeypatch.setattr(proxy.check, "_judged", spy)
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with (
        serve_fake_gateway(policies(tmp_path / "policies"), store) as (base, _),
        httpx.Client(timeout=10) as client,
    ):
        key = new_key(base, policy="tiny", tpm=100_000)
        body = {"messages": [
            {"role": "user", "content": "x " * 100},  # over tiny's max_chars (40)
            {"role": "assistant", "content": "Fine."}]}
        reply = client.post(f"{base}/v1/values/check", json=body,
                            headers={"authorization": f"Bearer {key}"})
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["code"] == "check_too_large"
    assert read == []
