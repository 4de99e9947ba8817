"""How the key limits' token estimate (``proxy.token_estimate``) compares with real tokenizers
(a measurement, not a test): per group of texts, the estimate ÷ the tokens of OpenAI's cl100k
and o200k tokenizers (the larger), on English from /work/shared/data, on a few sentences of
other languages and code, and on random texts written to be cheap to estimate. Above 1 the
key's ``tpm`` holds more than the upstream bills; below 1 a client spends up to 1 ÷ that × its
``tpm`` at once.

Needs ``tiktoken`` with its encodings cached (LiteLLM ships both: ``TIKTOKEN_CACHE_DIR`` is set
to its copy when unset).

    python bench/tokens_estimate.py
"""

from __future__ import annotations

import csv
import glob
import json
import os
import random
import string
from collections.abc import Callable
from pathlib import Path

import litellm

from proxy.token_estimate import text_tokens

DATA = Path(os.environ.get("VILMO_DATA_DIR", "/work/shared/data"))
OTHER = {
    "german": "Die Regierung hat am Dienstag neue Regeln für den Umgang mit künstlicher "
              "Intelligenz vorgestellt. Kritiker bemängeln, dass die Vorschriften zu spät kommen.",
    "russian": "Во вторник правительство представило новые правила использования "
               "искусственного интеллекта. Критики считают, что эти правила появились поздно.",
    "chinese": "政府周二公布了关于人工智能使用的新规定。批评者认为，这些规定出台得太晚。",
    "python": "def reserve(store, key, params):\n    need = token_need(params, 4096, key.tpm)\n"
              "    return None if need.least <= key.tpm else refuse(need)\n",
}


def english() -> dict[str, list[str]]:
    hh = [json.loads(line)["chosen"]
          for line in (DATA / "fulcra/hh_helpful_test.jsonl").read_text().splitlines()]
    cm = [r["input"] for r in csv.DictReader(
        (DATA / "ethics/commonsense/cm_test.csv").read_text().splitlines())]
    args = [r["Premise"] for r in csv.DictReader(
        (DATA / "valueeval/arguments-validation.tsv").read_text().splitlines(), delimiter="\t")]
    jb = [j["prompt"] for f in glob.glob(str(DATA / "jailbreakbench/*/*/*.json"))
          for j in json.loads(Path(f).read_text()).get("jailbreaks", []) if j.get("prompt")]
    return {"hh dialogues": hh[:800], "ethics posts": cm[:1500], "valueeval": args[:1500],
            "jailbreak prompts": jb}


def random_texts(n: int = 20_000) -> dict[str, list[str]]:
    rng = random.Random(7)

    def of(alphabet: str | Callable[[], str], count: int = n) -> list[str]:
        pick = alphabet if callable(alphabet) else (lambda: rng.choice(alphabet))
        return ["".join(pick() for _ in range(count))]

    return {"one long word": ["a" * n], "base64": of(string.ascii_letters + string.digits + "+/"),
            "hex": of("0123456789abcdef"), "printable ASCII": of(string.printable[:94]),
            "lowercase letters": of(string.ascii_lowercase),
            "uppercase letters": of(string.ascii_uppercase), "mixed whitespace": of(" \n\t\r"),
            "punctuation": of("!@#$%^&*()[]{};:,.<>?/|~`"),
            "CJK": of(lambda: chr(rng.randint(0x4E00, 0x9FFF)), n // 3),
            "emoji": of(lambda: chr(rng.randint(0x1F300, 0x1F5FF)), n // 4),
            "U+0100-2FFF": of(lambda: chr(rng.randint(0x0100, 0x2FFF)), n // 2)}


def main() -> None:
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(
        Path(litellm.__file__).parent / "litellm_core_utils" / "tokenizers"))
    import tiktoken

    encodings = [tiktoken.get_encoding(name) for name in ("cl100k_base", "o200k_base")]
    groups = {**english(), **{k: [v] for k, v in OTHER.items()}, **random_texts()}
    print(f"{'texts':20} {'bytes':>9} {'bytes/token':>12} {'estimate/tokens':>16}")
    for name, texts in groups.items():
        size = sum(len(t.encode()) for t in texts)
        real = max(sum(len(e.encode(t, disallowed_special=())) for t in texts)
                   for e in encodings)
        estimate = sum(map(text_tokens, texts))
        print(f"{name:20} {size:9d} {size / real:12.2f} {estimate / real:16.2f}")


if __name__ == "__main__":
    main()
