"""Prompt files and the named prompt sets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from vilmo.datasets.readers import data_dir
from vilmo.evaluation.prompts import PromptFileError, load_prompt_set, moral_stories, read_prompts


def test_moral_stories_are_balanced_and_split_by_the_stated_rule() -> None:
    prompts = moral_stories()
    assert len(prompts) >= 220 and len({p.id for p in prompts}) == len(prompts)
    assert len({p.text for p in prompts}) == len(prompts)
    per_value = Counter(p.values[0] for p in prompts)
    assert set(per_value) == {"mft.care", "mft.fairness", "mft.loyalty", "mft.authority",
                              "mft.sanctity"}
    assert len(set(per_value.values())) == 1
    for p in prompts:
        n = int(p.id.rsplit("-", 1)[1])
        assert p.split == ("test" if n % 10 in (3, 6, 9) else "train")
        assert p.text.startswith("Write a completion for the story. Story: ")
        assert not p.text.rstrip().endswith((".", "!", "?"))  # ends mid-sentence
    test = load_prompt_set("moral-stories:test")
    assert 0.25 < len(test) / len(prompts) < 0.35
    assert {p.split for p in test} == {"test"}
    assert len(load_prompt_set("moral-stories:train")) + len(test) == len(prompts)


def test_prompt_file_with_text_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "Tell me a story.", "values": ["mft.care"]}) + "\n\n"
                    + json.dumps({"id": "m1", "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi"}]}) + "\n")
    first, second = read_prompts(path)
    assert first.messages == [{"role": "user", "content": "Tell me a story."}]
    assert first.values == ("mft.care",) and first.id == "p-1"
    assert second.id == "m1" and second.text == "Hi" and second.values == ()


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "p.jsonl:2: not valid JSON"),
    ('["a list"]', "p.jsonl:2: expected a JSON object"),
    ('{"text": "x"}', "p.jsonl:2: needs a non-empty 'prompt'"),
    ('{"messages": [{"content": "x"}]}', "p.jsonl:2: 'messages' must be"),
    ('{"prompt": "x", "values": ["mft.kindness"]}', "p.jsonl:2: unknown value ids"),
])
def test_malformed_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(PromptFileError, match=message):
        read_prompts(path)


def test_unknown_sets_and_files() -> None:
    with pytest.raises(PromptFileError, match="not a known set"):
        load_prompt_set("moral-stories:dev")
    with pytest.raises(PromptFileError, match="must be a number"):
        load_prompt_set("saferlhf:test:many")


@pytest.mark.skipif(not (data_dir() / "fulcra").exists(), reason="FULCRA data folder not found")
def test_saferlhf_sample_is_deterministic() -> None:
    first = load_prompt_set("saferlhf:test:25")
    assert len(first) == 25 and first == load_prompt_set("saferlhf:test:25")
    assert all(p.values and all(v.startswith("safety.") for v in p.values) for p in first)
