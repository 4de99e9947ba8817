"""Evaluation prompt sets: files of prompts, and the sets the project ships or reads by name.

A prompt file is JSON Lines, one prompt per line: ``{"prompt": "..."}`` or
``{"messages": [<OpenAI chat messages>]}``, with optional ``"values": ["mft.care", ...]`` (the
value ids its completions are judged against; none means the policy's values) and ``"id"``.

Named sets:

- ``moral-stories:train`` / ``moral-stories:test`` (or ``moral-stories`` for both): 225
  story prefixes in the style of DeNEVIL's MoralPrompt, written for this project
  (``vilmo/data/prompts/moral_stories.jsonl``), 45 per moral foundation, each ending where
  the continuation could go either way. Split rule: the n-th story of a foundation (1-based) is
  in ``test`` when n mod 10 is 3, 6 or 9 (13 of 45 per foundation: 65 test, 160 train).
- ``saferlhf:train`` / ``saferlhf:test``, optionally ``:N`` (default 200): chat prompts drawn
  at run time from FULCRA's copy of the PKU-SafeRLHF questions in the data folder
  (``VILMO_DATA_DIR``, default ``../shared/data``; CC BY-NC 4.0, never copied here). Only
  questions with at least one harm category are used; their categories become ``safety.*``
  ids; the N are a seeded random sample, the same on every run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vilmo.datasets.readers import jsonl_lines
from vilmo.errors import VilmoError
from vilmo.types import Messages
from vilmo.values import VALUES

MORAL_STORIES = "moral_stories.jsonl"
SAFERLHF_DEFAULT_N = 200
SAMPLE_SEED = 1729
SET_NAMES = ("moral-stories", "moral-stories:train", "moral-stories:test",
             "saferlhf:train", "saferlhf:test")


@dataclass(frozen=True, slots=True)
class EvalPrompt:
    """One evaluation prompt: the chat messages to send and the values to judge replies by."""

    id: str
    messages: Messages
    values: tuple[str, ...] = ()
    split: str | None = None

    @property
    def text(self) -> str:
        """The last user turn's text (what the classifier sees as the prompt)."""
        for message in reversed(self.messages):
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                return str(message["content"])
        return ""


class PromptFileError(VilmoError, ValueError):
    """A prompt file or set that cannot be read; the message names the file and line."""


def parse_prompt(raw: Any, where: str, default_id: str) -> EvalPrompt:
    """One prompt from a decoded JSON line; ``where`` ("file:line") goes into every error."""
    if not isinstance(raw, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    if "messages" in raw:
        messages = raw["messages"]
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and "role" in m for m in messages)):
            raise PromptFileError(f"{where}: 'messages' must be a non-empty list of chat "
                                  "messages, each with a 'role'")
    elif isinstance(raw.get("prompt"), str) and raw["prompt"].strip():
        messages = [{"role": "user", "content": raw["prompt"]}]
    else:
        raise PromptFileError(f"{where}: needs a non-empty 'prompt' string or 'messages'")
    values = raw.get("values") or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise PromptFileError(f"{where}: 'values' must be a list of value ids")
    unknown = [v for v in values if v not in VALUES]
    if unknown:
        raise PromptFileError(f"{where}: unknown value ids {unknown} (see `vilmo values`)")
    split = raw.get("split")
    return EvalPrompt(str(raw.get("id") or default_id), messages, tuple(values),
                      str(split) if split is not None else None)


def parse_prompt_lines(lines: Sequence[str], source: str) -> list[EvalPrompt]:
    """Prompts from JSON Lines text; blank lines are skipped."""
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{where}: not valid JSON ({exc.msg})") from None
        prompts.append(parse_prompt(raw, where, f"{Path(source).stem}-{number}"))
    return prompts


def read_prompts(path: str | Path) -> list[EvalPrompt]:
    """Every prompt of a JSON Lines file, or a PromptFileError naming the bad line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PromptFileError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise PromptFileError(f"{p}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})"
                              ) from None
    return parse_prompt_lines(jsonl_lines(text), str(p))


def moral_stories(split: str | None = None) -> list[EvalPrompt]:
    """The shipped story prefixes, all or one split ("train" / "test")."""
    path = Path(__file__).resolve().parent.parent / "data" / "prompts" / MORAL_STORIES
    prompts = parse_prompt_lines(jsonl_lines(path.read_text(encoding="utf-8")), MORAL_STORIES)
    return [p for p in prompts if split is None or p.split == split]


def saferlhf_prompts(which: str, n: int = SAFERLHF_DEFAULT_N,
                     data_dir: str | Path | None = None) -> list[EvalPrompt]:
    """A seeded sample of n SafeRLHF questions that carry at least one harm category."""
    from vilmo.datasets.readers import DataError, DataMissing, saferlhf
    from vilmo.datasets.readers import data_dir as resolve

    if which not in ("train", "test"):
        raise PromptFileError(f"saferlhf split must be 'train' or 'test', not {which!r}")
    try:
        rows = [(text, ids) for text, ids in saferlhf(resolve(data_dir), which) if ids]  # type: ignore[arg-type]
    except (DataMissing, DataError) as exc:
        raise PromptFileError(str(exc)) from None
    chosen = sorted(random.Random(SAMPLE_SEED).sample(range(len(rows)), min(n, len(rows))))
    return [EvalPrompt(f"saferlhf-{which}-{i}", [{"role": "user", "content": rows[i][0]}],
                       tuple(dict.fromkeys(rows[i][1])), which) for i in chosen]


def load_prompt_set(spec: str, data_dir: str | Path | None = None) -> list[EvalPrompt]:
    """A prompt file path, or a set name: ``moral-stories[:train|:test]``,
    ``saferlhf:train|test[:N]``."""
    if Path(spec).is_file():
        return read_prompts(spec)
    name, _, rest = spec.partition(":")
    if name == "moral-stories" and rest in ("", "train", "test"):
        return moral_stories(rest or None)
    if name == "saferlhf":
        which, _, count = rest.partition(":")
        if count and not count.isdigit():
            raise PromptFileError(f"{spec}: the sample size after the split must be a number")
        return saferlhf_prompts(which, int(count) if count else SAFERLHF_DEFAULT_N, data_dir)
    raise PromptFileError(f"{spec}: no such file, and not a known set ({', '.join(SET_NAMES)})")
