"""How much more the judge reads than a text counts (a measurement, not a test): per kind of
text, the length of ``proxy.judged_text.judged_text`` (every reading of its escapes and bidi
runs) ÷ its length as sent without what renders as nothing (``visible``: what counts against
``checks.max_chars``). The figures behind ``proxy.guard.READ_FACTOR`` (4) and
``FAIL_OPEN_READ_FACTOR`` (2): the kinds a client sends read at most 2.8 times their length,
a text written to be read at every decode level about 5 times.

    python bench/judged_read_ratio.py
"""

from __future__ import annotations

import json
from pathlib import Path

from proxy.judged_text import judged_text, visible

ROOT = Path(__file__).resolve().parent.parent


def kinds() -> dict[str, str]:
    """The texts to measure, by kind."""
    source = "".join(p.read_text() for p in sorted((ROOT / "proxy").glob("*.py"))[:12])[:50_000]
    readme = (ROOT / "README.md").read_text()[:40_000]
    notes = [{"title": f"Doc {i}", "body": 'Line one.\nLine two says "hello".\tTabbed.\n'}
             for i in range(400)]
    stacked = "word " * 55 + "x\\u005cu005cu005cu0062y."
    return {
        "source as sent": source,
        "source in JSON": json.dumps({"content": source}),
        "source in JSON in JSON": json.dumps(json.dumps({"content": source[:40_000]})),
        "README in JSON": json.dumps(readme),
        "README in JSON in JSON": json.dumps(json.dumps(readme)),
        "notes in JSON": json.dumps(notes),
        "notes in JSON x2": json.dumps(json.dumps(notes)),
        "notes in JSON x4": json.dumps(json.dumps(json.dumps(json.dumps(notes)))),
        "non-ASCII in JSON x2": json.dumps(json.dumps(
            [{"t": "Grüße aus Köln, ça va? 日本語のテキスト。\nNext line"}] * 300)),
        "Windows paths in JSON": json.dumps(
            {"paths": [f"C:\\Users\\bob\\new folder\\table{i}.txt" for i in range(500)]}),
        "regular expressions in JSON": json.dumps({"patterns": [r"\bword\b\s+\d+\n\tnext"] * 500}),
        "LaTeX": r"\frac{a}{b} \beta \nabla \times \tau \rho " * 300,
        "written for it (each level other words)": (stacked + " ") * 200,
    }


def main() -> None:
    for kind, text in kinds().items():
        shown, read = len(visible(text)), len(judged_text(text))
        print(f"{kind:42} counts {shown:7,}  read {read:7,}  ratio {read / shown:.2f}")


if __name__ == "__main__":
    main()
