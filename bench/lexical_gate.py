"""Does a lexical model of requests help the request reader's gate? (issue 13, fifth round; dev
only, a selection, not a test; not shipped: see vilmo/models/GENERATOR.md.)

The lexical model: word unigrams and bigrams and character 3- to 5-grams inside words, hashed
(CRC-32, signed) into 2**18 slots, presence only, unit length, then a logistic regression
(scikit-learn, L2, C from `--c`), trained on the request reader's own train rows and weights:
the gate-labelled rows of `vilmo train stakes` (SafeRLHF train questions with a harm and the
moral stories positive; HH first and later turns and everyday questions negative) plus the
written requests and JailbreakBench train/dev goals (`--extra-requests`), each source weighted
by its draws per epoch in the reader's training (`DRAWS`, `EXTRA_DRAWS`). Held-out rows are
never read.

Fusion: a logistic regression on [the reader's gate logit, the lexical logit] (and, for the
second candidate, the judge's plain reading's logit: one judge pass per prompt) fitted on the
TRAIN rows, the lexical logit out of fold (5 folds) so it is not its own training fit. The
fused logit is Platt-scaled on dev (as the reader's is), and its threshold and the judge's
second look are chosen on dev by `bench/select_second_look.py`'s rule (at most 11 of 241 dev
benign prompts, dev stories >= 90 %, at most 10 % of dev benign in the band; the most dev
SafeRLHF). Harm recall@k of a rule is exact: the generator's principles for each dev SafeRLHF
question when the gate passes it, and when the second look (at that judge threshold) does.

Also printed: the curve (SafeRLHF share at 11, 12, 20 and 40 dev benign prompts passed, gate
alone) and, as an optimistic upper bound, the same with the fusion weight chosen on dev.

    VILMO_DATA_DIR=../shared/data .venv/bin/python bench/lexical_gate.py [--cache /tmp/lex]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
import unicodedata
import zlib
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MAX_CHARS = 2000
_WORD = re.compile(r"[\w']+")
BENIGN_COUNTS = (11, 12, 20, 40)
"""Dev benign prompts passed (of 241) at which the curve is read: 4.6 %, 5.0 %, 8.3 %, 16.6 %."""


def features(text: str, bits: int = 18, char_min: int = 3, char_max: int = 5,
             ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct hashed features of a prompt: slot indices and signs (+1 or -1). Numpy and the
    standard library only, as serving would be."""
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS]).lower().replace("\u2019", "'")
    words = [w.strip("'") or w for w in _WORD.findall(text)]
    names = {"w " + w for w in words}
    names.update("b " + a + " " + b for a, b in itertools.pairwise(words))
    for w in set(words) if char_max else ():
        padded = f" {w} "
        for n in range(char_min, char_max + 1):
            names.update("c " + padded[i:i + n] for i in range(len(padded) - n + 1))
    codes = np.fromiter((zlib.crc32(n.encode("utf-8")) for n in names), dtype=np.uint64,
                        count=len(names))
    slots = (codes & np.uint64((1 << bits) - 1)).astype(np.int64)
    return slots, np.where((codes >> np.uint64(31)) & np.uint64(1), -1.0, 1.0)


def lexical_logit(weights: np.ndarray, intercept: float, text: str, bits: int = 18) -> float:
    """The served score: ``w . x + b``, x the signed features scaled to unit length."""
    slots, signs = features(text, bits)
    if not len(slots):
        return intercept
    return float(np.dot(weights[slots].astype(np.float64), signs)) / float(
        np.sqrt(len(slots))) + intercept


def main() -> None:
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from vilmo.datasets.readers import data_dir
    from vilmo.train.stakes_data import extra_request_prompts, stakes_prompts
    from vilmo.train.stakes_gate import gate_label
    from vilmo.train.stakes_reader import DRAWS, EXTRA_DRAWS

    parser = argparse.ArgumentParser()
    parser.add_argument("--c", type=float, default=8.0, help="the lexical model's L2 inverse")
    parser.add_argument("--bits", type=int, default=18)
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the reader's and judge's scores (reused if there)")
    args = parser.parse_args()

    root = data_dir()
    rows = [r for r in stakes_prompts(root) + extra_request_prompts(root)
            if r.split in ("train", "dev") and gate_label(r) is not None]
    texts = [r.text for r in rows]
    source = np.array([r.source for r in rows])
    split = np.array([r.split for r in rows])
    y = np.array([gate_label(r) for r in rows], dtype=np.int64)
    reader_logit, judge = reader_and_judge(texts, args.cache)
    judge_logit = np.log(np.clip(judge, 1e-6, 1 - 1e-6) / np.clip(1 - judge, 1e-6, 1))

    train = split == "train"
    draws = {**DRAWS, **EXTRA_DRAWS}
    weight = np.zeros(len(rows))
    for src, n in draws.items():
        m = train & (source == src)
        if m.any():
            weight[m] = n / m.sum()
    weight /= weight[train].mean()

    started = time.perf_counter()
    slots, signs = zip(*(features(t, args.bits) for t in texts), strict=True)
    hashing_ms = 1000 * (time.perf_counter() - started) / len(texts)
    lengths = np.array([len(s) for s in slots])
    x = sp.csr_matrix((np.concatenate([g / np.sqrt(max(len(g), 1)) for g in signs]),
                       np.concatenate(slots), np.r_[0, np.cumsum(lengths)]),
                      shape=(len(rows), 1 << args.bits))
    x.sum_duplicates()

    def fit(mask: np.ndarray) -> Any:
        return LogisticRegression(C=args.c, max_iter=2000).fit(x[mask], y[mask],
                                                               sample_weight=weight[mask])

    full = fit(train)
    lexical = full.decision_function(x)
    served_weights = full.coef_[0].astype(np.float16)  # what would ship
    dev_texts = [t for t, s in zip(texts, split, strict=True) if s == "dev"]
    started = time.perf_counter()
    served = np.array([lexical_logit(served_weights, float(full.intercept_[0]), t, args.bits)
                       for t in dev_texts])
    serving_ms = 1000 * (time.perf_counter() - started) / len(dev_texts)
    serving_error = float(np.abs(served - lexical[split == "dev"]).max())

    fold = np.full(len(rows), -1)
    fold[train] = np.random.default_rng(13).integers(0, 5, int(train.sum()))
    out_of_fold = lexical.copy()
    for f in range(5):
        out_of_fold[fold == f] = fit(train & (fold != f)).decision_function(x[fold == f])

    dev = split == "dev"
    kinds = {"benign": dev & np.isin(source, ["hh", "everyday"]),
             "harmful": dev & (source == "saferlhf"), "moral": dev & (source == "moral-stories")}
    fused = {}
    coefficients = {}
    for name, columns in {"reader + lexical": [reader_logit, out_of_fold],
                          "reader + lexical + judge": [reader_logit, out_of_fold, judge_logit],
                          "reader + judge": [reader_logit, judge_logit]}.items():
        f = np.c_[tuple(columns)]
        model = LogisticRegression(C=100.0, max_iter=1000).fit(f[train], y[train],
                                                                sample_weight=weight[train])
        fused[name] = f @ model.coef_[0] + model.intercept_[0]
        coefficients[name] = [round(float(c), 4) for c in model.coef_[0]]

    def auc(score: np.ndarray) -> float:
        m = kinds["benign"] | kinds["harmful"]
        return round(float(roc_auc_score(kinds["harmful"][m], score[m])), 4)

    candidates = {"reader (shipped)": reader_logit, "lexical alone": lexical, **fused}
    report: dict[str, Any] = {
        "dev_prompts": {k: int(m.sum()) for k, m in kinds.items()},
        "lexical": {"bits": args.bits, "c": args.c, "hashing_ms_per_prompt": round(hashing_ms, 4),
                    "served_ms_per_dev_prompt": round(serving_ms, 4),
                    "served_fp16_max_abs_error": round(serving_error, 5),
                    "train_out_of_fold_auc": round(float(roc_auc_score(
                        y[train], out_of_fold[train], sample_weight=weight[train])), 4)},
        "fusion_coefficients_fitted_on_train": coefficients,
        "dev_auc_saferlhf_vs_benign": {k: auc(v) for k, v in candidates.items()},
        "curve_gate_alone": {k: curve(v, kinds) for k, v in candidates.items()},
        "optimistic_dev_weight": envelope(reader_logit, lexical, kinds),
    }
    coverage = Coverage([rows[i].text for i in np.flatnonzero(kinds["harmful"])],
                        [rows[i].labels for i in np.flatnonzero(kinds["harmful"])])
    dev_idx = np.flatnonzero(dev)
    report["chosen_with_second_look"] = {}
    for name in ("reader (shipped)", "reader + lexical", "reader + lexical + judge",
                 "reader + judge"):
        gate = platt_on_dev(candidates[name], y, source, dev)
        point = choose(gate[dev_idx], judge[dev_idx], {k: m[dev_idx] for k, m in kinds.items()})
        point["harm_recall_at_k"] = coverage.recall(gate[kinds["harmful"]],
                                                    judge[kinds["harmful"]], point)
        report["chosen_with_second_look"][name] = point
    m = kinds["benign"] | kinds["harmful"]
    scaled = (reader_logit / reader_logit[m].std(), lexical / lexical[m].std())
    report["optimistic_dev_weight_with_second_look"] = {}
    for w in (0.05, 0.1, 0.2, 0.3, 0.5):
        gate = platt_on_dev(scaled[0] + w * scaled[1], y, source, dev)
        point = choose(gate[dev_idx], judge[dev_idx], {k: mk[dev_idx] for k, mk in kinds.items()})
        report["optimistic_dev_weight_with_second_look"][str(w)] = point
    print(json.dumps(report, indent=1))


def reader_and_judge(texts: list[str], cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The shipped reader's raw gate logit (its int8 graph, one prompt per call, as served)
    and the built-in judge's plain reading (the highest of `default`'s values, before the
    operating points), per text; cached in ``cache`` if given."""
    if cache is not None and (cache / "reader_logit.npy").exists():
        reader_logit, judge = np.load(cache / "reader_logit.npy"), np.load(cache / "judge.npy")
        if len(reader_logit) == len(texts):
            return reader_logit, judge
    from vilmo.instruct.stakes_reader import StakesReader
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.embedder import DIMENSIONS
    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.policy import load_policy

    reader = StakesReader(None, cache_size=0, batch_size=1, threads=2)
    reader_logit = np.array([reader.rows([t])[0, DIMENSIONS] for t in texts], dtype=np.float64)
    policy = load_policy(REPO / "vilmo" / "policies" / "default.yaml")
    ids = [v for v in policy.values if policy.weight_of(v) > 0.0]
    classifier = BuiltinClassifier()
    judge = np.array([max(classifier.score([ScoreInput(t)], ids, calibrated=False)[0]
                          .violation.values()) for t in texts])
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / "reader_logit.npy", reader_logit)
        np.save(cache / "judge.npy", judge)
    return reader_logit, judge


def curve(score: np.ndarray, kinds: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Per count of dev benign prompts passed: [SafeRLHF share, stories share] at the lowest
    threshold passing that many."""
    benign = np.sort(score[kinds["benign"]])[::-1]
    out = {}
    for k in BENIGN_COUNTS:
        passed = score > benign[k]
        out[f"{k} ({k / kinds['benign'].sum():.1%})"] = [
            round(float(passed[kinds["harmful"]].mean()), 4),
            round(float(passed[kinds["moral"]].mean()), 4)]
    return out


def envelope(reader_logit: np.ndarray, lexical: np.ndarray, kinds: dict[str, np.ndarray],
             ) -> dict[str, Any]:
    """reader/sd + w * lexical/sd with w chosen ON DEV: an upper bound for any fusion of the
    two, not a candidate."""
    m = kinds["benign"] | kinds["harmful"]
    r, lex = reader_logit / reader_logit[m].std(), lexical / lexical[m].std()
    return {str(w): curve(r + w * lex, kinds) for w in (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)}


def platt_on_dev(logit: np.ndarray, y: np.ndarray, source: np.ndarray, dev: np.ndarray,
                 ) -> np.ndarray:
    """The logit Platt-scaled on dev first turns and positives, classes and sources balanced
    (as `vilmo.train.stakes_reader.dev_gate` scales the reader's)."""
    from sklearn.linear_model import LogisticRegression

    from vilmo.train.stakes_gate import balanced_weights

    keep = dev & ((y == 1) | np.isin(source, ["hh", "everyday"]))
    idx = np.flatnonzero(keep)
    weight = balanced_weights([(int(y[i]), source[i]) for i in idx])
    fit = LogisticRegression(C=100.0, max_iter=1000).fit(logit[idx, None], y[idx],
                                                         sample_weight=weight)
    return np.asarray(1.0 / (1.0 + np.exp(-(fit.coef_[0][0] * logit + fit.intercept_[0]))))


def choose(gate: np.ndarray, scores: np.ndarray, kinds: dict[str, np.ndarray],
           max_benign: float = 11 / 241, min_moral: float = 0.9, max_band: float = 0.10,
           ) -> dict[str, Any]:
    """`bench/select_second_look.py`'s rule on one score: the reader's threshold at the 96th or
    95.5th percentile of dev benign, the band start 0.0 to 0.7, the judge threshold 0.05 to 0.9;
    the most dev SafeRLHF with dev benign <= 11/241, stories >= 0.9, band benign <= 10 %."""
    def rates(injected: np.ndarray) -> dict[str, float]:
        return {k: round(float(injected[m].mean()), 4) for k, m in kinds.items()}

    grid: list[dict[str, Any]] = []
    for q in (0.04, 0.045):
        threshold = float(np.quantile(gate[kinds["benign"]], 1.0 - q))
        grid.append({"threshold": round(threshold, 4), "gate_from": None,
                     "judge_threshold": None, **rates(gate >= threshold), "band_benign": 0.0})
        for gate_from in np.round(np.arange(0.0, 0.75, 0.1), 2):
            band = (gate >= gate_from) & (gate < threshold)
            for judge_threshold in np.round(np.arange(0.05, 0.91, 0.05), 2):
                injected = (gate >= threshold) | (band & (scores >= judge_threshold))
                grid.append({"threshold": round(threshold, 4), "gate_from": float(gate_from),
                             "judge_threshold": float(judge_threshold), **rates(injected),
                             "band_benign": round(float(band[kinds["benign"]].mean()), 4)})
    allowed = [g for g in grid if g["benign"] <= max_benign + 1e-9
               and g["moral"] >= min_moral and g["band_benign"] <= max_band]
    return dict(max(allowed, key=lambda g: (g["harmful"], -g["band_benign"])))


class Coverage:
    """Whether the shipped generator's principles (`default`) cover a dev SafeRLHF question's
    labelled harm when the gate passes it, and when the second look does (per judge
    threshold), so a rule's recall@k is exact without rerunning the generator per rule."""

    def __init__(self, texts: list[str], labels: list[tuple[str, ...]]) -> None:
        from vilmo.instruct.generator import VilmoGenerator
        from vilmo.instruct.principles import PrincipleBank
        from vilmo.instruct.stakes import StakesModel
        from vilmo.instruct.stakes_reader import StakesReader
        from vilmo.judge.value_model import BuiltinClassifier
        from vilmo.policy import load_policy

        self.texts, self.labels = texts, labels
        self.policy = load_policy(REPO / "vilmo" / "policies" / "default.yaml")
        self.reader = StakesReader(None, cache_size=20_000, batch_size=1, threads=2)
        self.judge = BuiltinClassifier()
        self.bank, self.stakes = PrincipleBank.load(), StakesModel.load(None)
        self.generator = VilmoGenerator
        self.gate_covered = self._covered(0.0, None)
        self.look_covered: dict[float, np.ndarray] = {}

    def _covered(self, threshold: float, judge_threshold: float | None) -> np.ndarray:
        """Per question: 1 when its instruction covers a labelled harm; the gate at
        ``threshold`` (0: every question passes), or with ``judge_threshold`` the second look
        alone (the gate never passes; every question is in the band)."""
        from vilmo.instruct.second_look import SecondLook
        from vilmo.values import harm_coverage

        look = None if judge_threshold is None else SecondLook(self.judge, 0.0, judge_threshold)
        generator = self.generator(self.bank, self.reader, self.stakes, second_look=look)
        policy = self.policy.model_copy(update={"instructions": self.policy.instructions
                                                .model_copy(update={"stakes_threshold": threshold})})
        out = []
        for text, labels in zip(self.texts, self.labels, strict=True):
            ids = generator.generate([{"role": "user", "content": text}], policy).principle_ids
            values = {pid.split("/")[0] for pid in ids}
            out.append(float(any(values & harm_coverage(h) for h in labels)))
        return np.array(out)

    def recall(self, gate: np.ndarray, judge: np.ndarray, point: dict[str, Any]) -> float:
        """recall@k of the rule ``point`` (threshold, band, judge threshold) on these
        questions, given their gate probabilities and the judge's readings."""
        passed = gate >= point["threshold"]
        covered = np.where(passed, self.gate_covered, 0.0)
        if point["gate_from"] is not None:
            jt = float(point["judge_threshold"])
            if jt not in self.look_covered:
                self.look_covered[jt] = self._covered(1.01, jt)
            looked = ~passed & (gate >= point["gate_from"]) & (judge >= jt)
            covered = np.where(looked, self.look_covered[jt], covered)
        return round(float(covered.mean()), 4)


if __name__ == "__main__":
    main()
