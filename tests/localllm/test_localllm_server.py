"""The server and the batcher with a scripted engine: wire format, streaming, batching."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence

import pytest
from starlette.testclient import TestClient

from localllm.engine import Finish, GenRequest, GenResult
from localllm.server import create_app


class ScriptedEngine:
    """Answers 'You said: <last user line>' word by word; records the batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.prompts: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        self.gate.wait(5)
        self.batches.append(len(requests))
        out = []
        for r in requests:
            self.prompts.append(r.prompt)
            if "CRASH" in r.prompt:
                raise RuntimeError("engine crashed")
            last = r.prompt.splitlines()[-2].removeprefix("User: ")
            words = f"You said: {last}".split(" ")[: r.max_tokens]
            for i, w in enumerate(words):
                if r.on_text:
                    r.on_text(w if i == 0 else " " + w)
            finish: Finish = "length" if len(words) == r.max_tokens else "stop"
            out.append(GenResult(" ".join(words), finish, 7, len(words)))
        return out


@pytest.fixture()
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture()
def client(engine: ScriptedEngine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, "tiny", batch_size=4)) as c:
        yield c


def chat(**extra: object) -> dict[str, object]:
    return {"model": "tiny", "messages": [{"role": "system", "content": "Be kind."},
                                          {"role": "user", "content": "hello there"}], **extra}


def test_models(client: TestClient) -> None:
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"


def test_completion(client: TestClient, engine: ScriptedEngine) -> None:
    body = client.post("/v1/chat/completions", json=chat(max_tokens=50)).json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["choices"][0]["message"] == {"role": "assistant",
                                             "content": "You said: hello there"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    assert engine.prompts[0] == "Be kind.\n\nUser: hello there\nAssistant:"


def test_n_and_length(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json=chat(max_tokens=2, n=3)).json()
    assert [c["message"]["content"] for c in body["choices"]] == ["You said:"] * 3
    assert {c["finish_reason"] for c in body["choices"]} == {"length"}


def test_stream_ends_with_done(client: TestClient) -> None:
    with client.stream("POST", "/v1/chat/completions",
                       json=chat(stream=True, stream_options={"include_usage": True})) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "You said: hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_stream_error_still_ends_with_done(client: TestClient) -> None:
    with client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "CRASH"}], "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and "engine crashed" in lines[-2]


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": 3}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2, "stream": True}, "n"),
])
def test_bad_requests(client: TestClient, body: dict[str, object], param: str) -> None:
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_engine_failure_is_a_500(client: TestClient) -> None:
    r = client.post("/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "CRASH"}]})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"


def test_concurrent_requests_share_a_batch(client: TestClient, engine: ScriptedEngine) -> None:
    engine.gate.clear()  # hold the first batch so the others queue up behind it
    results: list[int] = []

    def call(i: int) -> None:
        results.append(client.post("/v1/chat/completions", json=chat()).status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    threading.Timer(0.5, engine.gate.set).start()
    for t in threads:
        t.join(10)
    assert results == [200] * 9
    assert sum(engine.batches) == 9 and max(engine.batches) == 4 and len(engine.batches) <= 4
