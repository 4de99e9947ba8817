"""The dashboard's figures, computed from the audit trail (``GET /admin/summary``).

Per value and per policy, compliance S = 1 − violation rate: of the requests whose verdict
scored the value, the share that did not violate it. The Value Compass view sets a value
profile's weights against the compliance observed under it; its alignment score is Σ w·S over the
values observed, with the weights normalised to sum to 1 (so the score is in [0, 1]). The profile
is the one bound to the request's key (``profile`` of the record), else the policy itself: one
radar per (policy, profile) pair seen, so keys with different profiles on one policy are scored
each by their own weights.

``actions`` counts the policy's action of each record (a ``monitor`` stream's ``block`` among
them, though nothing was blocked); ``enforced`` counts what the gateway did (the record's
``enforced``: relayed, annotated, refused, regenerated, abandoned; records written before it was
recorded, and failed requests, are not counted there).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from proxy.store import AuditRecord

SUMMARY_MAX_RECORDS = 50_000
"""At most this many records (the newest) are read per summary; ``truncated`` says so."""
MAX_BUCKETS = 500
EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp() - 86400
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() + 86400
"""The instants a summary may span: those ISO 8601 can write (years 1 to 9999, with any UTC
offset). Beyond them the span overflows (``-1.7e308`` to ``1.7e308`` is infinite seconds) or
its buckets mean nothing."""
LATEST_FLAGGED = 25


def parse_instant(text: str) -> float:
    """Unix seconds, or ISO 8601 (``2026-11-30T09:00:00Z``; without an offset: UTC).
    ValueError otherwise."""
    try:
        seconds = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not math.isfinite(seconds):  # "nan" and "inf" parse, and would filter nothing silently
        raise ValueError(f"{text!r} is not a finite number of seconds")
    return seconds


class _Tally:
    __slots__ = ("checked", "violated")

    def __init__(self) -> None:
        self.checked = 0
        self.violated = 0

    def add(self, violated: bool) -> None:
        self.checked += 1
        self.violated += violated

    def json(self) -> dict[str, object]:
        return {"checked": self.checked, "violated": self.violated,
                "compliance": None if not self.checked else round(1 - self.violated / self.checked, 4)}


def summarize(records: Iterable[AuditRecord], weights: Mapping[str, Mapping[str, float]],
              since: float, until: float, bucket: float,
              max_records: int = SUMMARY_MAX_RECORDS) -> dict[str, object]:
    """``records`` newest first (as the store returns them); ``weights``: policy → value →
    weight from the config."""
    count = 0
    truncated = False
    buckets: dict[int, dict[str, object]] = {}
    values: defaultdict[str, _Tally] = defaultdict(_Tally)
    policies: defaultdict[str, _Tally] = defaultdict(_Tally)
    per_profile_value: defaultdict[tuple[str, str], defaultdict[str, _Tally]] = defaultdict(
        lambda: defaultdict(_Tally))
    actions: Counter[str] = Counter()
    enforced: Counter[str] = Counter()
    keys: dict[str, dict[str, int]] = {}
    flagged: list[dict[str, object]] = []
    regenerations = 0
    for record in records:
        if count >= max_records:
            truncated = True
            break
        count += 1
        scores = _scores(record.data)
        violated = set(record.values)
        index = int((record.ts - since) // bucket)
        slot = buckets.setdefault(index, {"t": round(since + index * bucket, 3), "requests": 0,
                                          "flagged": 0, "values": defaultdict(_Tally),
                                          "policies": defaultdict(_Tally)})
        slot["requests"] = int(str(slot["requests"])) + 1
        slot["flagged"] = int(str(slot["flagged"])) + bool(violated)
        profile = _profile(record, weights)
        for value in set(scores) | violated:
            values[value].add(value in violated)
            slot["values"][value].add(value in violated)  # type: ignore[index]
            if record.policy:
                per_profile_value[record.policy, profile][value].add(value in violated)
        if scores or violated:
            policies[record.policy or "other"].add(bool(violated))
            slot["policies"][record.policy or "other"].add(bool(violated))  # type: ignore[index]
        actions[record.action or "none"] += 1
        done = record.data.get("enforced")
        if isinstance(done, str):
            enforced[done] += 1
        regen = record.data.get("regenerations")
        regenerations += regen if isinstance(regen, int) else 0
        usage = keys.setdefault(record.key or "anonymous",
                                {"requests": 0, "tokens": 0, "flagged": 0})
        usage["requests"] += 1
        tokens = record.data.get("tokens")
        usage["tokens"] += tokens if isinstance(tokens, int) else 0
        usage["flagged"] += bool(violated)
        if violated and len(flagged) < LATEST_FLAGGED:
            flagged.append({"id": record.id, "ts": record.ts, "key": record.key,
                            "policy": record.policy, "model": record.model,
                            "action": record.action,
                            "enforced": done if isinstance(done, str) else None,
                            "values": list(record.values),
                            "scores": {v: s for v, s in scores.items() if v in violated}})
    series = [{"t": slot["t"], "requests": slot["requests"], "flagged": slot["flagged"],
               "values": {v: t.json() for v, t in sorted(slot["values"].items())},  # type: ignore[attr-defined]
               "policies": {p: t.json() for p, t in sorted(slot["policies"].items())}}  # type: ignore[attr-defined]
              for _, slot in sorted(buckets.items())]
    return {
        "since": since, "until": until, "bucket": bucket, "requests": count,
        "truncated": truncated, "series": series,
        "values": {v: t.json() for v, t in sorted(values.items())},
        "policies": {p: t.json() for p, t in sorted(policies.items())},
        "actions": dict(actions.most_common()), "enforced": dict(enforced.most_common()),
        "regenerations": regenerations,
        "compass": [compass(policy, weights[profile], observed, profile)
                    for (policy, profile), observed in sorted(per_profile_value.items())
                    if profile in weights],
        "flagged": flagged,
        "keys": [{"key": k, **u} for k, u in sorted(keys.items(), key=lambda kv: -kv[1]["requests"])],
    }


def compass(policy: str, weights: Mapping[str, float], observed: Mapping[str, _Tally],
            profile: str | None = None) -> dict[str, object]:
    """One radar: the profile's weight (default: the policy's) and the compliance observed
    under the policy per value, and Σ w·S."""
    axes = []
    total_weight = 0.0
    weighted = 0.0
    for value, weight in sorted(weights.items()):
        tally = observed.get(value)
        compliance = None if tally is None or not tally.checked else 1 - tally.violated / tally.checked
        axes.append({"value": value, "weight": weight,
                     "compliance": None if compliance is None else round(compliance, 4)})
        if compliance is not None:
            total_weight += weight
            weighted += weight * compliance
    score = None if total_weight == 0 else round(weighted / total_weight, 4)
    return {"policy": policy, "profile": profile or policy, "axes": axes, "alignment": score}


def _profile(record: AuditRecord, weights: Mapping[str, Mapping[str, float]]) -> str:
    """The record's value profile when it is known, else its policy (no policy: "")."""
    bound = record.data.get("profile")
    if isinstance(bound, str) and bound in weights:
        return bound
    return record.policy or ""


def _scores(data: Mapping[str, object]) -> dict[str, float]:
    """Every value the request's verdicts scored: the reply's (``verdict``) and the input's
    (``input_verdict``, beside it in the record: ``RequestRecord.to_json``)."""
    found: dict[str, float] = {}
    for part in (data.get("verdict"), data.get("input_verdict")):
        if isinstance(part, dict) and isinstance(part.get("scores"), dict):
            for value, score in part["scores"].items():
                if isinstance(score, int | float):
                    found[str(value)] = max(float(score), found.get(str(value), 0.0))
    return found
