"""The VILMO generator: stake-aware, learned value instructions behind ``InstructionGenerator``.

For a prompt it first asks whether any value is at stake: the request reader
(``vilmo.instruct.stakes_reader``, one int8 pass that also gives the prompt's embedding) where one
is given, as the gateway does, else the gate of the values-at-stake model
(``vilmo.instruct.stakes``). Below the policy's ``stakes_threshold`` (default: that model's
operating point) it injects nothing, or the policy's short ``baseline``, unless the value judge's second look
at a prompt the gate is unsure of finds a policy value at stake (``vilmo.instruct.second_look``,
when the generator has a judge). A first-person distress disclosure the distress detector
(``vilmo.instruct.distress``) fires on puts ``safety.self_harm`` at stake (first), with its
care principle first, whatever the gate says. Otherwise it judges which of the policy's
values are at stake and retrieves candidates from their principles (``vilmo.instruct.candidates``:
principles ranked by values at stake × policy weight × similarity, each in every style), predicts each
one's violation rate with the policy's per-target scorer (``instructions.weights``; without
one, relevance order in the policy's style is the prediction), and composes the best ones
within ``max_principles`` and a character budget. Results are cached per (policy, prompt), so a
repeated prompt costs a lookup; the encoder keeps its own cache of prompt embeddings. Both caches
are in-process LRUs unless ``use_caches`` hands in shared ones (the gateway's store: a TTL, and
every replica reads what one computed).
Policies whose generator is not ``vilmo`` are served by the relevance generator, so one object
serves every policy.
"""
from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from vilmo.instruct.candidates import Candidate, CandidateSet, Retriever
from vilmo.instruct.distress import DISTRESS_PRINCIPLE, DISTRESS_VALUES, DistressDetector
from vilmo.instruct.instructions import (
    HEADER,
    MAX_PER_VALUE,
    Instruction,
    RelevanceGenerator,
    prompt_text,
)
from vilmo.instruct.principles import STYLES, PrincipleBank
from vilmo.instruct.scorer import InstructionScorer, ScorerFileError, ScorerStore
from vilmo.instruct.second_look import SecondLook
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import PromptReading, StakesReader
from vilmo.judge.embedder import TextEncoder, cache_key
from vilmo.judge.shared_cache import SharedCache
from vilmo.judge.value_onnx import beside
from vilmo.policy import Policy, PolicyError
from vilmo.types import Messages
from vilmo.yamlfile import FileIssue

NAME = "vilmo"
CANDIDATE_PRINCIPLES = 8  # retrieved per prompt; each is tried in every style
MAX_CHARS = 600  # instruction budget: about 150 tokens on top of every request


class VilmoGenerator:
    """Candidates from retrieval, chosen by the learned scorer, composed within a budget."""

    name = NAME

    def __init__(self, bank: PrincipleBank, encoder: TextEncoder,
                 stakes: StakesModel | None = None, scorers: ScorerStore | None = None,
                 candidates: int = CANDIDATE_PRINCIPLES, max_chars: int = MAX_CHARS,
                 cache_size: int = 4096, base_dir: str | Path | None = None,
                 second_look: SecondLook | None = None, reader_values: bool = False,
                 distress: DistressDetector | None | bool = True) -> None:
        self.reader = encoder if isinstance(encoder, StakesReader) else None
        """An ``encoder`` that is the fine-tuned request reader (``vilmo.instruct.stakes_reader``)
        also decides whether anything is at stake; with a plain encoder, the gate and heads of
        ``stakes`` on the frozen embedding decide."""
        self.reader_values = reader_values
        """With a reader: also take which values from the reader's value outputs. Off by
        default: on dev they ranked the foundations (care) above a question's own harm, and the
        heads of ``stakes`` on the same embedding name the harm itself more often."""
        self.retriever = Retriever(bank, encoder, stakes or StakesModel.load())
        self.relevance = RelevanceGenerator(bank, encoder)
        self.scorers = scorers or ScorerStore()
        self.candidates = candidates
        self.max_chars = max_chars
        self.base_dir = Path(base_dir) if base_dir else None
        """Relative ``instructions.weights`` paths are read from here (default: the cwd)."""
        self.second_look = second_look
        """None: the gate alone decides (no judge to ask)."""
        self.distress = DistressDetector.shipped() if distress is True else distress or None
        """Puts ``safety.self_harm`` at stake in distress disclosures (``vilmo.instruct.distress``;
        True: the shipped detector, None or False: none)."""
        self._cache: OrderedDict[tuple[str, str], Instruction] = OrderedDict()
        self._cache_size = cache_size
        self._fingerprints: dict[int, tuple[Policy, str]] = {}
        self._lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0
        """Lookups of the in-process cache (a shared cache counts its own)."""
        self.shared: SharedCache | None = None

    def use_caches(self, instructions: SharedCache | None,
                   embeddings: SharedCache | None) -> None:
        """Keep instructions in ``instructions`` and prompt embeddings in ``embeddings``
        instead of in-process LRUs (None: back to those)."""
        self.shared = instructions
        for encoder in {id(e): e for e in (self.retriever.encoder,
                                            self.relevance.encoder)}.values():
            use_cache = getattr(encoder, "use_cache", None)
            if callable(use_cache):
                use_cache(embeddings)

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        if policy.instructions.generator != NAME:
            return self.relevance.generate(messages, policy)
        prompt = prompt_text(messages)
        shared = self.shared
        if shared is not None:
            return self._generate_shared(shared, prompt, policy)
        key = (self._fingerprint(policy), cache_key(prompt))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                self._cache.move_to_end(key)
                return hit
            self.cache_misses += 1
        instruction = self.choose(prompt, policy)
        with self._lock:
            self._cache[key] = instruction
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return instruction

    def _generate_shared(self, shared: SharedCache, prompt: str, policy: Policy) -> Instruction:
        key = f"{NAME}:{self._fingerprint(policy)}:{self.models_id}\n{prompt}"
        data = shared.get(key)
        found = None if data is None else _load_instruction(data)
        if found is not None:
            return found
        instruction = self.choose(prompt, policy)
        shared.put(key, _dump_instruction(instruction))
        return instruction

    def choose(self, prompt: str, policy: Policy) -> Instruction:
        """Nothing (or the baseline) when no value is at stake, else the instruction predicted
        to give the lowest violation from the principles of the values at stake (uncached)."""
        reading, distressed, looked = self._read(prompt, policy)
        stakes = self.judge(reading, policy, prompt, looked)
        probs = reading.probabilities if stakes else None
        if distressed:
            stakes, probs = self._with_distress(stakes, policy, reading)
        if not stakes:
            return Instruction(policy.instructions.baseline or "", (), NAME)
        scorer = self.scorer_for(policy)
        styles = STYLES if scorer else (policy.instructions.style,)
        cs = self.retriever.retrieve(prompt, policy, self.candidates, styles, only=stakes,
                                     vector=reading.vector, probs=probs,
                                     first=DISTRESS_PRINCIPLE if distressed else None)
        ranked = self.rank(cs, scorer)
        if distressed:  # the care principle first, whatever the scorer predicts
            ranked.sort(key=lambda c: c.principle.id != DISTRESS_PRINCIPLE)
        return self.compose(ranked, policy.instructions.max_principles, stakes)

    def _with_distress(self, stakes: tuple[str, ...], policy: Policy, reading: PromptReading
                       ) -> tuple[tuple[str, ...], np.ndarray | None]:
        """The values at stake with the first distress value the policy weighs put first, and
        the value probabilities with it certain (so its principles are retrieved)."""
        value = next((v for v in DISTRESS_VALUES if policy.weight_of(v) > 0.0), None)
        column = None if value is None else self.retriever.stakes.index(value)
        if value is None or column is None:
            return stakes, reading.probabilities if stakes else None
        probs = np.array(reading.probabilities, dtype=np.float32, copy=True)
        probs[column] = 1.0
        return tuple(dict.fromkeys([value, *stakes])), probs

    def read(self, prompt: str) -> PromptReading:
        """The prompt's embedding, gate probability and value probabilities: from the reader
        (one pass) if there is one, else from the stakes model on the plain embedding."""
        return self.read_distress(prompt)[0]

    def read_distress(self, prompt: str) -> tuple[PromptReading, bool]:
        """``read``, and whether the distress detector fires on the prompt (the embedding is
        computed for it only where the reader's outputs pass the detector's prefilter)."""
        return self._read(prompt)[:2]

    def _read(self, prompt: str, policy: Policy | None = None,
              ) -> tuple[PromptReading, bool, tuple[str, ...] | None]:
        """``read_distress``, and, for ``policy``, the second look's values (None: not taken
        yet). Where the detector needs the reader's embedding half and the policy's gate wants
        a second look, both follow the reader's first half alone, so they run side by side
        (``vilmo.judge.value_onnx.beside``; issue 16: the first token's path); the results are
        those of running them in turn."""
        stakes = self.retriever.stakes
        if not prompt.strip():
            width = stakes.weights.shape[1]
            return PromptReading(np.zeros(width, dtype=np.float32), 0.0,
                                 np.zeros(len(stakes.value_ids), dtype=np.float32)), False, None
        detector = self.distress
        if self.reader is not None:
            # The reader's embedding is computed only if asked for (values at stake, distress).
            raw = self.reader.read(prompt)
            reading = raw if self.reader_values else raw.rescored(stakes.probabilities)
            prefiltered = (detector is not None
                           and detector.looks_distressed(raw.gate, raw.probabilities))
            looked = None
            if prefiltered and policy is not None and self._looks_twice(reading, policy):
                look = self.second_look
                assert look is not None
                looked, _ = beside(lambda: look.values_at_stake(prompt, policy),
                                   lambda: reading.vector)
            distressed = prefiltered and detector is not None and detector.fires(reading.vector)
            return reading, distressed, looked
        vector = self.retriever.embed(prompt)
        return (PromptReading(vector, stakes.at_stake_probability(vector),
                              stakes.probabilities(vector)),
                detector is not None and detector.fires(vector), None)

    def _threshold_for(self, policy: Policy) -> float:
        threshold = policy.instructions.stakes_threshold
        return self.threshold if threshold is None else threshold

    def _looks_twice(self, reading: PromptReading, policy: Policy) -> bool:
        """Whether ``judge`` asks the second look about this reading under ``policy``."""
        threshold = self._threshold_for(policy)
        return (self.second_look is not None and not reading.blank
                and reading.gate < threshold and self.second_look.wanted(reading.gate, threshold))

    @property
    def threshold(self) -> float:
        """The default gate threshold (chosen on dev) of whichever model reads prompts."""
        return self.reader.threshold if self.reader is not None else self.retriever.stakes.threshold

    def judge(self, reading: PromptReading, policy: Policy, prompt: str = "",
              looked: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The policy's values at stake for a prompt (``read``), most at stake first; empty
        when the gate's probability is below the policy's threshold and the judge's second look
        (if any) finds no policy value at stake in the prompt's text. Values the second look
        finds come first, then those of the values-at-stake heads. The reading's embedding is
        asked for only when a value is at stake. ``looked``: the second look's values if
        already taken (``_read``)."""
        threshold = self._threshold_for(policy)
        if reading.blank:
            return ()
        if reading.gate >= threshold:
            return self.retriever.values_at_stake(reading.vector, policy, reading.probabilities)
        if self.second_look is None or not self.second_look.wanted(reading.gate, threshold):
            return ()
        flagged = (looked if looked is not None
                   else self.second_look.values_at_stake(prompt, policy))
        if not flagged:
            return ()
        return tuple(dict.fromkeys(
            [*flagged, *self.retriever.values_at_stake(reading.vector, policy,
                                                       reading.probabilities)]))

    def scorer_for(self, policy: Policy) -> InstructionScorer | None:
        """The policy's per-target scorer, or None (relevance order is the prediction)."""
        path = self.weights_path(policy)
        return self.scorers.get(path) if path is not None else None

    def weights_path(self, policy: Policy) -> Path | None:
        """Where the policy's per-target scorer is (relative paths from ``base_dir``)."""
        weights = policy.instructions.weights
        if not weights:
            return None
        path = Path(weights).expanduser()
        if not path.is_absolute() and self.base_dir:
            path = self.base_dir / path
        return path

    def check(self, policy: Policy) -> None:
        """Load the policy's weights now, so a missing or corrupt file fails when the policy
        is loaded (a PolicyError naming the file), not per request."""
        try:
            self.scorer_for(policy)
        except (OSError, ScorerFileError) as exc:
            raise PolicyError([FileIssue(str(self.weights_path(policy)), None,
                                         "instructions.weights", str(exc))]) from exc

    def prepare(self, policy: Policy) -> None:
        """Embed the principles the policy's instructions are drawn from now (the gateway's
        start-up): the first of its requests with a value at stake would otherwise wait for
        them (about 0.4 s for ``default``), as no warm-up prompt has a value at stake."""
        if policy.instructions.generator == NAME:
            self.retriever.matrix(self.retriever.pool(policy).principles)
            _ = self.models_id

    def prepared(self, policy: Policy) -> bool:
        """Whether ``prepare`` has run for this policy's principles (a policy added or edited
        since start-up has not), so the step needs no principle embedding."""
        if policy.instructions.generator != NAME:
            return False
        return self.retriever.has_texts(self.retriever.pool(policy).texts)

    @staticmethod
    def rank(cs: CandidateSet, scorer: InstructionScorer | None) -> list[Candidate]:
        """Candidates, lowest predicted violation first; ties keep relevance order."""
        if scorer is None:
            return list(cs.candidates)
        predicted = scorer.predict(cs)
        return [cs.candidates[int(i)] for i in np.argsort(predicted, kind="stable")]

    def compose(self, ranked: list[Candidate], max_principles: int,
                stakes: tuple[str, ...] = ()) -> Instruction:
        """One line per chosen principle (each principle once, MAX_PER_VALUE per value), as long
        as the text stays within ``max_chars``; the best candidate is always kept."""
        lines: list[str] = []
        ids: list[str] = []
        per_value: dict[str | None, int] = {}
        length = len(HEADER)
        for c in ranked:
            if len(ids) >= max_principles:
                break
            value = c.principle.value
            if c.principle.id in ids or per_value.get(value, 0) >= MAX_PER_VALUE:
                continue
            line = f"- {c.text}"
            if ids and length + 1 + len(line) > self.max_chars:
                continue
            lines.append(line)
            ids.append(c.principle.id)
            per_value[value] = per_value.get(value, 0) + 1
            length += 1 + len(line)
        if not ids:
            return Instruction("", (), NAME, stakes)
        return Instruction("\n".join([HEADER, *lines]), tuple(ids), NAME, stakes)

    @functools.cached_property
    def models_id(self) -> str:
        """A digest of what an instruction depends on besides the policy and the prompt (the
        encoder or request reader and its gate, the values-at-stake heads, the second look's
        judge and its band, the principle bank, the candidate and length budgets), so a replica
        with other models or rules (a rolling upgrade) never serves this one's cached
        instructions (part of the shared cache's key; the in-process cache lives and dies with
        these models). A policy's own scorer weights file is named by its path only."""
        encoder = self.retriever.encoder
        digest = hashlib.sha1(str(getattr(encoder, "model_id", type(encoder).__name__)).encode())
        if self.reader is not None:
            digest.update(json.dumps(self.reader.config, sort_keys=True).encode())
        stakes = self.retriever.stakes
        digest.update(stakes.weights.tobytes() + stakes.bias.tobytes())
        if stakes.gate is not None:
            digest.update(stakes.gate.hidden.tobytes() + stakes.gate.weights.tobytes())
        look = self.second_look
        if self.distress is not None:
            digest.update(self.distress.digest)
        if look is not None:
            digest.update(f"{look.gate_from}|{look.judge_threshold}|{look.calibrated}".encode())
        for principle in self.retriever.bank.principles:
            digest.update(repr(principle).encode())
        digest.update(f"{self.candidates}|{self.max_chars}".encode())
        judge_dir = getattr(look.judge, "model_dir", None) if look is not None else None
        if judge_dir is not None:
            for name in ("config.json", "weights.safetensors"):
                path = Path(judge_dir) / name
                if path.exists():
                    digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()[:12]

    def _fingerprint(self, policy: Policy) -> str:
        """Name + content hash: an edited policy of the same name misses the cache."""
        with self._lock:
            found = self._fingerprints.get(id(policy))
            if found is not None and found[0] is policy:
                return found[1]
        digest = hashlib.sha1(policy.model_dump_json().encode("utf-8")).hexdigest()[:16]
        fingerprint = f"{policy.name}:{digest}"
        with self._lock:
            if len(self._fingerprints) > 1024:
                self._fingerprints.clear()
            self._fingerprints[id(policy)] = (policy, fingerprint)
        return fingerprint


def _dump_instruction(instruction: Instruction) -> bytes:
    return json.dumps({"text": instruction.text, "principle_ids": instruction.principle_ids,
                       "generator": instruction.generator, "stakes": instruction.stakes},
                      ensure_ascii=False).encode()


def _load_instruction(data: bytes) -> Instruction | None:
    """The cached instruction; None for a value this version cannot read (a miss)."""
    try:
        fields = json.loads(data)
        return Instruction(str(fields["text"]), tuple(map(str, fields["principle_ids"])),
                           str(fields["generator"]), tuple(map(str, fields["stakes"])))
    except (ValueError, KeyError, TypeError):
        return None
