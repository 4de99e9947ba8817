"""Do ordinary replies read and score as before the display reading (``proxy.shown_text``)?
A measurement, not a test: over HH helpful replies (the last assistant turn of ``chosen`` in
``fulcra/hh_helpful_test.jsonl``, the first ``--hh`` rows), the JailbreakBench PAIR responses
(model replies, much markdown) and markdown replies written here, the judged text without
``shown`` (the reading before it) and with it: how many readings change, and how far the real
judge's scores move (every built-in value, the shipped value model).

    python bench/shown_text_stability.py [--hh 300]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from proxy.judged_text import _other_levels, _shown_differently, judged_text, unescaped, visible
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
]


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
    texts = replies(parser.parse_args().hh)
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
