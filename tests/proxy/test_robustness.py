"""Nothing a client sends makes the gateway answer 500 or stop serving: seeded random
mutations of a valid request, each answered with a 2xx or a 4xx OpenAI error envelope."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
from conftest import ADMIN_KEY

VALID: dict[str, Any] = {"model": "stub", "messages": [{"role": "user", "content": "Hi there."}]}
ODD_VALUES: list[Any] = [None, 0, -1, 1.5, True, "", "x" * 300, [], {}, [None], [1, "a"],
                         {"role": "user"}, {"content": 3}, [{"role": "user", "content": None}],
                         [{"role": "user", "content": [{"type": "text"}]}],
                         [{"role": "user", "content": [{"type": "image_url", "image_url": 1}]}],
                         [{"role": "tool", "content": "x"}], "\u0000\udfff", {"$ref": "#"}]
FIELDS = ["model", "messages", "stream", "stream_options", "n", "tools", "temperature",
          "max_tokens", "extra_field", "messages.0", "messages.0.content", "messages.0.role"]


def mutate(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(VALID))
    for _ in range(rng.randint(1, 3)):
        field, value = rng.choice(FIELDS), rng.choice(ODD_VALUES)
        if field.startswith("messages.") and isinstance(body.get("messages"), list) \
                and body["messages"] and isinstance(body["messages"][0], dict):
            parts = field.split(".")
            if len(parts) == 2:
                body["messages"][0] = value
            else:
                body["messages"][0][parts[2]] = value
        else:
            body[field.split(".")[0]] = value
    return body


def test_random_bodies_never_give_500(gateway: str) -> None:
    rng = random.Random(20261127)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": "g-annotate-buffer"}
    with httpx.Client(timeout=30, headers=headers) as client:
        for _ in range(150):
            body = mutate(rng)
            try:
                content = json.dumps(body).encode()
            except (UnicodeEncodeError, ValueError):
                content = repr(body).encode("utf-8", "replace")
            response = client.post(f"{gateway}/chat/completions", content=content,
                                   headers={"content-type": "application/json"})
            assert response.status_code < 500, (body, response.text)
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            else:
                response.read()
        ok = client.post(f"{gateway}/chat/completions", json=VALID)
        assert ok.status_code == 200
