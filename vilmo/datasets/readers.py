"""Readers for the labelled value data sets, with fixed, stated splits.

The data stay where they are (``../shared/data`` by default, ``VILMO_DATA_DIR`` or an explicit
path to move them); nothing is copied into the repository. Every split is a pure function of a
row's text (a SHA-1 bucket 0..99) or of its position, so training, evaluation and tests agree on
which rows are held out without storing lists of ids.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vilmo.errors import VilmoError
from vilmo.values import VALUEEVAL_CATEGORIES as VALUEEVAL_CATEGORIES  # noqa: PLC0414 (re-exported)
from vilmo.values import by_source_label

Split = Literal["train", "dev", "heldout"]

VALUEEVAL_TO_SCHWARTZ: dict[str, str] = {  # the one mapping of the 20 categories
    "Self-direction: thought": "schwartz.self_direction",
    "Self-direction: action": "schwartz.self_direction",
    "Stimulation": "schwartz.stimulation",
    "Hedonism": "schwartz.hedonism",
    "Achievement": "schwartz.achievement",
    "Power: dominance": "schwartz.power",
    "Power: resources": "schwartz.power",
    "Face": "schwartz.power",  # prestige and public image: the power / achievement side
    "Security: personal": "schwartz.security",
    "Security: societal": "schwartz.security",
    "Tradition": "schwartz.tradition",
    "Conformity: rules": "schwartz.conformity",
    "Conformity: interpersonal": "schwartz.conformity",
    "Humility": "schwartz.tradition",  # 'humble' is an item of tradition in Schwartz (1992)
    "Benevolence: caring": "schwartz.benevolence",
    "Benevolence: dependability": "schwartz.benevolence",
    "Universalism: concern": "schwartz.universalism",
    "Universalism: nature": "schwartz.universalism",
    "Universalism: tolerance": "schwartz.universalism",
    "Universalism: objectivity": "schwartz.universalism",
}
AMBIGUOUS_VALUEEVAL = frozenset({"Face", "Humility"})
"""Categories whose Schwartz value is a judgement call; the classifier's upholds heads skip them."""


class DataMissing(VilmoError, FileNotFoundError):
    """A data set the caller asked for is not in the data folder."""


class DataError(VilmoError, ValueError):
    """A data file has a line or row that cannot be read (not JSON, a field missing or of the
    wrong kind); the message names the file and line. Never skipped: a silently shorter data
    set would change every figure computed from it."""


class _Row(dict[str, object]):
    """A record that knows where it was read: a missing field is a ``DataError`` naming the
    file and line instead of a bare ``KeyError``."""

    where: str

    def __missing__(self, key: str) -> object:
        raise DataError(f"{self.where}: no {key!r} field")


def _row(fields: object, where: str) -> _Row:
    if not isinstance(fields, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(fields).__name__}")
    row = _Row(fields)
    row.where = where
    return row


def _int(row: _Row, key: str) -> int:
    """A whole-number field of a CSV or TSV row."""
    try:
        return int(str(row[key]))
    except ValueError:
        raise DataError(f"{row.where}: {key!r} is not a whole number: {row[key]!r}") from None


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder: the argument, else ``VILMO_DATA_DIR``, else ``../shared/data``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("VILMO_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent.parent / "shared" / "data"


def bucket(text: str) -> int:
    """A stable bucket 0..99 for a text: the basis of every text-keyed split."""
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % 100


def split_of(text: str, heldout: int, dev: int) -> Split:
    """Buckets below ``heldout`` are held out, the next ``dev`` are validation, the rest train."""
    b = bucket(text)
    if b < heldout:
        return "heldout"
    return "dev" if b < heldout + dev else "train"


@dataclass(frozen=True, slots=True)
class Example:
    """One text with labels; ``prompt`` is the turn that led to ``response``, if any."""

    response: str
    prompt: str | None = None
    labels: dict[str, float] = field(default_factory=dict)
    """Head output name -> target (0/1); heads not named are not trained on this example."""
    source: str = ""


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataMissing(f"{path} not found (set VILMO_DATA_DIR or --data-dir)")
    return path


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON Lines text: split at "\n" only (a trailing "\r" dropped), since
    ``str.splitlines`` also splits at U+2028, U+0085, form feeds and the like, which
    ``json.dumps(..., ensure_ascii=False)`` leaves raw inside strings."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _jsonl(path: Path) -> Iterator[_Row]:
    """Each object of a JSON Lines file (lines end at "\n" only: U+2028 and the like are
    legal inside JSON strings); blank lines are skipped, a bad one is a ``DataError``."""
    with _need(path).open(encoding="utf-8", newline="\n") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    fields = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                yield _row(fields, f"{path}:{number}")


def _table(path: Path, delimiter: str = ",") -> Iterator[_Row]:
    """The rows of a CSV (or TSV) file with a header line; a row's place is its first line."""
    with _need(path).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        _ = reader.fieldnames  # reads the header line
        line = reader.line_num + 1
        for fields in reader:
            yield _row(fields, f"{path}:{line}")
            line = reader.line_num + 1


def _csv(path: Path) -> Iterator[_Row]:
    return _table(path)


def _strings(value: object) -> list[str]:
    return [str(x) for x in value] if isinstance(value, list) else []


_LABEL = re.compile(r"^\s*(.+?)\s*:\s*([-+=]?)\s*1\s*\+?\s*$")


def parse_value_label(raw: str) -> tuple[str, int] | None:
    """``"benevolence: -1"`` -> ``("benevolence", -1)``; unclean forms (1, +1, =1, 1+) are +1."""
    m = _LABEL.match(raw)
    if not m:
        return None
    return m.group(1).lower(), -1 if m.group(2) == "-" else 1


def split_dialogue(dialogue: str) -> tuple[str | None, str]:
    """The last human turn and the assistant's reply of a FULCRA or HH dialogue."""
    parts = re.split(r"\n*(Human|Bob|Assistant):\s*", dialogue.strip())
    turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    if not turns:
        return None, dialogue.strip()
    reply = turns[-1][1] if turns[-1][0] != "Human" else ""
    humans = [t for role, t in turns if role == "Human"]
    return (humans[-1] if humans else None), reply


@dataclass(frozen=True, slots=True)
class FulcraRow:
    prompt: str | None
    response: str
    values: dict[str, int]
    """Schwartz value id -> -1 (goes against) or +1 (upholds)."""


def fulcra(root: Path, split: Split | None = None) -> list[FulcraRow]:
    """FULCRA replies; split 25 % held out, 10 % dev by the dialogue's bucket. A few replies
    recur in several dialogues: held-out keeps none that also occur outside it."""
    rows = []
    records = list(_jsonl(root / "fulcra" / "trustworthy_data.jsonl"))
    outside = {split_dialogue(str(d["dialogue"]))[1] for d in records
               if split_of(str(d["dialogue"]), 25, 10) != "heldout"}
    for d in records:
        dialogue = str(d["dialogue"])
        if split and split_of(dialogue, 25, 10) != split:
            continue
        if split == "heldout" and split_dialogue(dialogue)[1] in outside:
            continue
        labels: dict[str, int] = {}
        for raw in _strings(d.get("value_types")):
            parsed = parse_value_label(str(raw))
            value = by_source_label(parsed[0]) if parsed else None
            if parsed and value:
                labels[value.id] = parsed[1]
        prompt, reply = split_dialogue(dialogue)
        if reply:
            rows.append(FulcraRow(prompt, reply, labels))
    return rows


def hh_chosen(root: Path, split: Split | None = None) -> list[tuple[str | None, str]]:
    """Benign (prompt, reply) pairs: HH helpful ``chosen``; 40 % held out, 10 % dev."""
    out = []
    for d in _jsonl(root / "fulcra" / "hh_helpful_test.jsonl"):
        text = str(d["chosen"])
        if split and split_of(text, 40, 10) != split:
            continue
        prompt, reply = split_dialogue(text)
        if reply:
            out.append((prompt, reply))
    return out


def saferlhf(root: Path, which: Literal["train", "test"]) -> list[tuple[str, list[str]]]:
    """SafeRLHF prompts with the safety value ids of their harm categories."""
    out = []
    for d in _jsonl(root / "fulcra" / f"saferlhf_{which}_questions.jsonl"):
        ids = [v.id for lab in _strings(d.get("safety_issues"))
               if (v := by_source_label(lab))]
        out.append((str(d["prompt"]), ids))
    return out


@dataclass(frozen=True, slots=True)
class Argument:
    prompt: str
    premise: str
    labels: tuple[int, ...]
    conclusion: str
    """What the argument argues for or against; arguments share conclusions, and the validation
    file's conclusions are all unseen in training."""


def valueeval(root: Path, which: Literal["training", "validation"]) -> list[Argument]:
    """ValueEval arguments: prompt = stance + conclusion, response = premise."""
    base = root / "valueeval"
    labels = {r["Argument ID"]: tuple(_int(r, c) for c in VALUEEVAL_CATEGORIES)
              for r in _tsv(base / f"labels-{which}.tsv")}
    return [Argument(f"{r['Stance']}: {r['Conclusion']}", str(r["Premise"]),
                     _labels_of(labels, r), str(r["Conclusion"]))
            for r in _tsv(base / f"arguments-{which}.tsv")]


def _labels_of(labels: dict[object, tuple[int, ...]], row: _Row) -> tuple[int, ...]:
    try:
        return labels[row["Argument ID"]]
    except KeyError:
        raise DataError(f"{row.where}: argument {row['Argument ID']!r} has no labels") from None


def _tsv(path: Path) -> list[_Row]:
    return list(_table(path, "\t"))


def commonsense(root: Path, which: Literal["test", "test_hard"],
                part: Split | None = None) -> list[tuple[str, int]]:
    """ETHICS commonsense (1 = clearly wrong). ``cm_test`` is divided by position: rows with
    index % 10 in {0, 1, 2} are held out, 3 is dev, the rest train. ``cm_test_hard`` is only
    ever evaluated."""
    rows = [(str(r["input"]), _int(r, "label"))
            for r in _csv(root / "ethics" / "commonsense" / f"cm_{which}.csv")]
    if part is None:
        return rows

    def part_of(i: int) -> Split:
        return "heldout" if i % 10 < 3 else "dev" if i % 10 == 3 else "train"

    return [r for i, r in enumerate(rows) if part_of(i) == part]


def justice(root: Path, which: str = "train") -> list[tuple[str, int]]:
    """ETHICS justice scenarios with 1 = unreasonable (the file's 0)."""
    return [(str(r["scenario"]), 1 - _int(r, "label"))
            for r in _csv(root / "ethics" / "justice" / f"justice_{which}.csv")]


def deontology(root: Path, which: str = "train") -> list[tuple[str, str, int]]:
    """ETHICS deontology (scenario, excuse) with 1 = unreasonable excuse (the file's 0)."""
    return [(str(r["scenario"]), str(r["excuse"]), 1 - _int(r, "label"))
            for r in _csv(root / "ethics" / "deontology" / f"deontology_{which}.csv")]


JBB_CATEGORY_TO_SAFETY: dict[str, tuple[str, ...]] = {
    "Harassment/Discrimination": ("safety.hate_speech", "safety.discrimination"),
    "Malware/Hacking": ("safety.financial_crime", "safety.unethical"),
    "Physical harm": ("safety.violence",),
    "Economic harm": ("safety.financial_crime",),
    "Fraud/Deception": ("safety.financial_crime", "safety.unethical"),
    "Disinformation": ("safety.misinformation",),
    "Sexual/Adult content": ("safety.sexual_content",),
    "Privacy": ("safety.privacy",),
    "Expert advice": ("safety.unethical",),
    "Government decision-making": ("safety.unethical",),
}
"""JailbreakBench's ten categories as the taxonomy's safety values (a judgement call, stated in
the model card)."""


@dataclass(frozen=True, slots=True)
class JailbreakReply:
    """One chat model's reply to a harmful request, from the JailbreakBench artifacts."""

    goal: str
    """The plain harmful request."""
    attack_prompt: str
    """What the attack actually sent (the goal wrapped in a jailbreak)."""
    response: str
    complied: bool
    """``jailbroken`` as JailbreakBench's LLM judge labelled it."""
    behavior: str
    category: str
    source: str
    """``<method>/<attack type>/<model>``."""


def jailbreakbench(root: Path, split: Split | None = None) -> list[JailbreakReply]:
    """JailbreakBench replies (rows without a response are skipped), split BY BEHAVIOUR: 25 % of
    the behaviours held out, 15 % dev, by the bucket of the ``behavior`` name, so no behaviour
    is in two splits."""
    base = _need(root / "jailbreakbench")
    out = []
    for path in sorted(base.glob("*/*/*.json")):
        try:
            doc = _row(json.loads(path.read_text("utf-8")), str(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        source = "/".join(path.relative_to(base).with_suffix("").parts)
        jailbreaks = doc.get("jailbreaks", [])
        for i, fields in enumerate(jailbreaks if isinstance(jailbreaks, list) else []):
            r = _row(fields, f"{path}: jailbreaks[{i}]")
            if not r.get("response") or (split and split_of(str(r["behavior"]), 25, 15) != split):
                continue
            out.append(JailbreakReply(str(r["goal"]), str(r.get("prompt") or r["goal"]),
                                      str(r["response"]), bool(r["jailbroken"]),
                                      str(r["behavior"]), str(r["category"]), source))
    return out


JUDGE_DATA = Path(__file__).resolve().parent.parent / "data" / "judge"
"""Data written for this project (see its README): committed, so read from the package."""


def judge_rows(name: str) -> list[dict[str, object]]:
    """Rows of ``vilmo/data/judge/<name>.jsonl``."""
    return list(_jsonl(JUDGE_DATA / f"{name}.jsonl"))
