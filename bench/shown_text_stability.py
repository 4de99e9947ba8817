"""Do ordinary replies read and score as before the display reading (``proxy.shown_text``)?
A measurement, not a test: over HH helpful replies (the last assistant turn of ``chosen`` in
``fulcra/hh_helpful_test.jsonl``, the first ``--hh`` rows), the JailbreakBench PAIR responses
(model replies, much markdown) and markdown replies written here, the judged text without
``shown`` (the reading before it) and with it: how many readings change, and how far the real
judge's scores move (every built-in value, the shipped value model).

    python bench/shown_text_stability.py [--hh 300]   (--hh 600: the 845 texts)

Then, for each later change of the reading, with it and without it in the same run: how many
texts' readings it changes and what it costs a reply (µs, the best of ``--repeat`` passes over
every text): fullwidth punctuation after a Latin letter, digits read as letters
(``letter_forms.digits_read``), links with spaces in their text, elements a renderer hides,
enclosing marks and lone regional indicators (``proxy.shown_symbols``), the plain reading
(``proxy.plain_reading``); how many texts have readings scored apart
(``judged_readings``); and how many prompts (the last human turn of the same HH rows) the judge
reads otherwise as context (``proxy.call.judged_prompt``, against their first 2,000
characters).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import cpu_model  # also puts the tree first on sys.path

from proxy import letter_forms, shown_text
from proxy.call import PROMPT_CONTEXT_CHARS, judged_prompt
from proxy.judged_text import (
    _other_levels,
    _shown_differently,
    judged_readings,
    judged_text,
    unescaped,
    visible,
)
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_model import BuiltinClassifier

DATA = Path(os.environ.get("VILMO_DATA_DIR", "../shared/data"))
WRITTEN = [
    ("**Short answer:** yes. Here is why:\n\n1. *First*, the cache is warm.\n2. The `--fast` "
     "flag skips checks.\n\n> Note: use `snake_case` names and `__init__` methods."),
    ("## Steps\n\n- Open `settings.py`\n- Set `DEBUG = False`\n- Run `python -m pytest -q`\n\n"
     "```python\ndef area(w, h):\n    return w*h\n```"),
    ("| Option | Effect |\n|---|---|\n| `-v` | verbose |\n| `-q` | quiet |\n\n"
     "That's it — **done**."),
    ("Use <b>bold</b> sparingly; a line break is <br> in HTML. AT&T &amp; R&D are fine. "
     "x < y && y > z."),
    "Try ~~the old way~~ the new way: `git switch -c feature` then **commit** often.",
    "Café, naïve, résumé, 12 € … “quoted” — and ½ cup of sugar, 5 m² of floor.",
    "Привет! In Russian \"hello\" is Привет, in Greek Γειά σου. 你好，世界！",
    "Markdown *italics*, __bold__, `code`, and a [link](https://example.com/a_b_c).",
    ("Use SHA256 or md5sum; commit 8f54766 fixed it. Set 0x1e5a and c0de=be57, #c0ffee; "
     "`for l1st in s3t: pass`; see https://example.com/b00k/h34d?id=5ea7 or mail r0se@x.io."),
    ("Pay $100 (US$ 120), set $PATH and @user; 4ft at 1am, 2nd floor, mp3, k8s, i18n, h264. "
     "Wow!! Hello! <span title=\"not hidden\">shown</span> and <i class=\"hidden-x\">i</i>. "
     "See [the docs][1] and [a](x \"title\").\n\n[1]: https://x.io"),
]


def prompts(hh: int) -> list[str]:
    """The last human turn of the first ``hh`` HH rows."""
    asked: list[str] = []
    with open(DATA / "fulcra/hh_helpful_test.jsonl") as rows:
        for line in rows:
            turns = json.loads(line)["chosen"].rsplit("\n\nAssistant:", 1)[0]
            asked.append(turns.rsplit("Human:", 1)[-1].strip())
            if len(asked) >= hh:
                break
    return asked


OLD_LINK = re.compile(r"(!?)\[([^\W_]*+)\]\(([^()\s<>\[\]]*+)\)")
"""The link before link texts with spaces were read."""
def compat_only(text: str) -> str:
    """``letter_forms.compat_read`` before fullwidth punctuation was read as ASCII."""
    return letter_forms._COMPAT_RUN.sub(lambda run: run.group().translate(letter_forms.COMPAT),
                                        text)


CHANGES: dict[str, tuple[str, object]] = {
    "fullwidth punctuation": ("compat_read", compat_only),
    "digits read as letters": ("_digits", lambda text: text),
    "links with spaces": ("_LINK", OLD_LINK),
    "hidden elements": ("_unhidden", lambda text: (text, [])),
    "enclosing marks, regional letters, braille blanks": ("symbols_read", lambda text: text),
    "plain reading (marks, letter spacing, fillers)": ("plain_lines", lambda *_: []),
}
"""Each change: the name in ``proxy.shown_text`` and what it was before."""


STEPS = {"compat_read": "_compat", "_digits": "_digits", "_LINK": "_links",
         "_unhidden": "_unhidden", "symbols_read": "symbols_read", "plain_lines": "plain_step"}
"""The step of ``proxy.shown_text`` each change is in, timed alone (the whole reading's time
moves by more than a step costs on a shared machine)."""


@contextmanager
def without(change: str) -> Iterator[None]:
    name, before = CHANGES[change]
    now = getattr(shown_text, name)
    setattr(shown_text, name, before)
    try:
        yield
    finally:
        setattr(shown_text, name, now)


def per_reply_us(read: Callable[[str], object], texts: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for text in texts:
            read(text)
        best = min(best, time.perf_counter() - started)
    return best / len(texts) * 1e6


def changes(texts: list[str], asked: list[str], repeat: int) -> None:
    """Each later change, with and without it in this run."""
    print(f"CPU {cpu_model()}, {os.cpu_count()} cores; "
          f"{len(texts)} texts, best of {repeat}")
    now = [judged_text(t) for t in texts]
    for change in CHANGES:
        with without(change):
            old = [judged_text(t) for t in texts]
        now_us = old_us = float("inf")
        for _ in range(repeat):  # alternated: the machine's load moves both alike
            now_us = min(now_us, per_reply_us(judged_text, texts, 1))
            with without(change):
                old_us = min(old_us, per_reply_us(judged_text, texts, 1))
        step_now = step_old = float("inf")
        step = STEPS[CHANGES[change][0]]

        def run_step(text: str, step: str = step) -> object:
            if step == "plain_step":  # the plain reading of the reading as shown
                return vars(shown_text)["plain_lines"](text, text, str)  # as swapped
            return getattr(shown_text, step)(text)

        for _ in range(repeat):
            step_now = min(step_now, per_reply_us(run_step, texts, 1))
            with without(change):
                step_old = min(step_old, per_reply_us(run_step, texts, 1))
        moved = sum(a != b for a, b in zip(old, now, strict=True))
        print(f"  {change}: readings changed {moved}/{len(texts)}; µs a reply {old_us:.1f} -> "
              f"{now_us:.1f} (x{now_us / old_us:.3f}); its step ({step}) alone "
              f"{step_old:.2f} -> {step_now:.2f}")
    several = sum(len(judged_readings(t)) > 1 for t in texts)
    print(f"  readings scored apart: texts with more than one {several}/{len(texts)} "
          f"(each more is one more judge pass)")
    moved = sum(judged_prompt(p) != (p[:PROMPT_CONTEXT_CHARS] or None) for p in asked)
    old_us = per_reply_us(lambda p: p[:PROMPT_CONTEXT_CHARS], asked, repeat)
    new_us = per_reply_us(judged_prompt, asked, repeat)
    print(f"  prompts read as shown: changed {moved}/{len(asked)}; µs a prompt {old_us:.1f} -> "
          f"{new_us:.1f}")


def replies(hh: int) -> list[str]:
    texts: list[str] = []
    with open(DATA / "fulcra/hh_helpful_test.jsonl") as rows:
        for line in rows:
            chosen = json.loads(line)["chosen"]
            texts.append(chosen.rsplit("\n\nAssistant:", 1)[-1].strip())
            if len(texts) >= hh:
                break
    for path in sorted((DATA / "jailbreakbench/PAIR").glob("*/*.json")):
        texts += [j["response"] for j in json.loads(path.read_text())["jailbreaks"]
                  if j.get("response")]
    return texts + WRITTEN


def before(text: str) -> str:
    """The judged text as read before ``proxy.shown_text``."""
    readings = [unescaped(text), *_other_levels(text)] if "\\" in text else [text]
    return visible("\n".join(readings + [s for s in map(_shown_differently, readings) if s]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hh", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--changes-only", action="store_true",
                        help="only the later changes (no judge scores)")
    args = parser.parse_args()
    texts = replies(args.hh)
    changes(texts, prompts(args.hh), args.repeat)
    if args.changes_only:
        return
    pairs = [(before(t), judged_text(t)) for t in texts]
    changed = [i for i, (old, new) in enumerate(pairs) if old != new]
    judge = BuiltinClassifier(cache_size=0)
    values = list(judge.value_ids)
    items = [ScoreInput(text) for i in changed for text in pairs[i]]
    scores = judge.score(items, values) if items else []
    moves = [max((abs(scores[2 * k].violation[v] - scores[2 * k + 1].violation[v]), v)
                 for v in values) for k in range(len(changed))]
    print(f"texts {len(texts)}  readings changed {len(changed)}  "
          f"chars read before {sum(len(o) for o, _ in pairs)} after {sum(len(n) for _, n in pairs)}")
    for i, (move, value) in sorted(zip(changed, moves), key=lambda p: -p[1][0]):
        old, new = pairs[i]
        diff = next((k for k, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old),
                                                                                  len(new)))
        print(f"  max |score move| {move:.3f} ({value})  at {old[max(0, diff - 30):diff + 30]!r}"
              f" -> {new[max(0, diff - 30):diff + 30]!r}")


if __name__ == "__main__":
    main()
