"""The built-in value classifier: packaged MiniLM + committed top layers and heads, on CPU.

One encoder pass per text window serves every value. Long replies are cut into overlapping
windows whose scores are max-pooled, so a violation at the end of a reply is not diluted by a
benign beginning. A reply of two or more sentences is also read sentence by sentence (each after
the prompt, at most ``WindowSpec.max_spans`` spans), so one harmful sentence inside benign advice
is not diluted by the sentences around it; the sentence reading is a second reading with its own
operating points (``sentence_operating_points``), and a sentence speaks only for the heads that
can judge a sentence cut out of its reply (not ``WindowSpec.span_ignores``). A sentence is
read in a row of its own after the prompt, or, costing no rows, from its own tokens inside the
whole window (``WindowSpec.span_reading``, ``vilmo.judge.window_rows``). A reply after a
prompt is also read alone, and its whole reading mixes the two (``WindowSpec.alone_weight``;
its ``cm`` / foundation rows may come from the reading alone: ``heads_read_alone``), or pools
its reply's tokens (``WindowSpec.whole_pooling``), so that a vicious prompt does not dominate
what the reply itself does. The network runs as an int8 ONNX Runtime graph
(``vilmo.judge.value_onnx``) for speed; results of recent texts are cached, so a repeated reply
is not encoded again, nor a reply another thread is reading now. The graph quantises activations
per batch, so each text's rows are batched apart by a fixed rule
(``vilmo.judge.pooling.item_batches``): a text's scores depend on the text and the weights
alone, not on the texts scored in the same call or on the machine's load.

Violation scores are rescaled at each value's operating point (``operating_points`` in the
weights' config, chosen on dev by ``vilmo.train.operating.operating_points``): a score of 0.5
means the same for every value, the point where the gateway should act, so one threshold
(0.5, the default) serves every value of a policy. The rescaling is monotone (piecewise
linear through 0, the operating point and 1), so it keeps each value's ranking within each
reading; a value's score is the higher of its two readings' rescaled scores. A plain text (any
text scored without a prompt: an input check, ``/v1/values/check`` with no prompt, a reply with
no user turn; a prompt that is blank after ``strip()`` is none) is measured against its own
points (``plain_operating_points``, ``plain_sentence_operating_points``; a reading without them
uses the reply's), so a refit of the reply points does not move its verdict.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from vilmo.judge.classifier import ScoreInput, UnknownValue, ValueScores, given_prompt
from vilmo.judge.heads import BUILTIN_VALUES, SCHWARTZ, compose, heads_read_alone
from vilmo.judge.pooling import item_batches, max_pool, mean_pool, mix_alone, rescaled
from vilmo.judge.window_rows import ALONE, ALONE_FINE, FINE, SENTENCE, WHOLE, WindowRows
from vilmo.numeric import sigmoid
from vilmo.types import Matrix

if TYPE_CHECKING:
    from vilmo.judge.value_net import TokenLogitsNet, ValueNet
    from vilmo.judge.value_onnx import Outputs
    from vilmo.judge.windowing import WindowSpec, WordPieceTokenizer

__all__ = ["ALONE", "ALONE_FINE", "CONTEXT_HEADS", "FINE", "MODEL_NAME", "SENTENCE", "WHOLE",
           "BuiltinClassifier", "default_model_dir"]
MODEL_NAME = "value_classifier"
CONTEXT_HEADS = frozenset({"cm", "justice", "deontology", "valueeval"})
"""Heads that judge a whole scenario or argument, so not short excerpts of it."""
GRAPH_OUTPUTS = "logits, token_logits"
"""What the judge's graph gives (``vilmo.judge.value_net.TokenLogitsNet``), in its cache key."""


_Reading = tuple[Matrix, Matrix, Matrix]
"""An item's whole-reading and sentence-reading violation scores and its upholds scores."""


def default_model_dir() -> Path:
    """Where the committed weights live inside the package."""
    return Path(str(resources.files("vilmo").joinpath("models", MODEL_NAME)))


@dataclass(frozen=True, slots=True)
class _Loaded:
    net: Outputs
    tokenizer: WordPieceTokenizer
    spec: WindowSpec
    names: tuple[str, ...]
    a: Matrix
    b: Matrix
    config: dict[str, Any]
    context_heads: npt.NDArray[np.int64]
    operating: Matrix | None
    """Per BUILTIN_VALUES, the composed score that maps to 0.5 (None: no rescaling)."""
    sentence_operating: Matrix | None
    """The same for the sentence reading's scores, which have their own operating points
    (None: the sentences are pooled with the whole reading and share ``operating``)."""
    span_ignored: npt.NDArray[np.int64]
    """Heads a sentence span reads as 0 (``WindowSpec.span_ignores``)."""
    plain_operating: tuple[Matrix | None, Matrix | None]
    """The whole and sentence readings' points for a plain text (any text scored without a
    prompt), fitted on dev plain texts (``plain_*operating_points``; None: the reply's)."""


class BuiltinClassifier:
    """Encoder + heads for every value in ``vilmo.judge.heads.BUILTIN_VALUES``.

    Loading is lazy and happens once (thread-safe); ``score`` may be called from worker threads.
    """

    def __init__(self, model_dir: str | Path | None = None, encoder_path: str | Path | None = None,
                 quantize: bool = True, batch_size: int = 32, cache_size: int = 2048,
                 threads: int = 1) -> None:
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        self.encoder_path = Path(encoder_path) if encoder_path else None
        self.quantize = quantize
        self.threads = threads
        """ONNX Runtime threads per call: 1 in the gateway (checks run in parallel with the
        rest of the request path); offline batch jobs may pass the number of cores."""
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple[str | None, str], _Reading] = OrderedDict()
        self._cache_size = cache_size
        self._reading: dict[tuple[str | None, str], Future[_Reading]] = {}
        """Texts being read now, by any thread: another caller waits for them (one pass)."""
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    @property
    def value_ids(self) -> tuple[str, ...]:
        return BUILTIN_VALUES

    @property
    def config(self) -> dict[str, Any]:
        return self._model().config

    def _model(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> _Loaded:
        """The tokenizer, heads and network; with a cached graph (``vilmo warmup``) this
        imports neither torch nor transformers."""
        from vilmo.judge.embedder import packaged_model_path
        from vilmo.judge.windowing import WindowSpec, WordPieceTokenizer

        config = json.loads((self.model_dir / "config.json").read_text("utf-8"))
        encoder_path = Path(self.encoder_path or config.get("encoder") or packaged_model_path())
        names = tuple(config["heads"])
        weights = self.model_dir / "weights.safetensors"
        def fp32() -> ValueNet:
            from vilmo.judge.value_net import fp32_network  # torch: to export, or the fp32 path
            return fp32_network(config, encoder_path, weights)

        net: Outputs
        if self.quantize:
            from vilmo.judge.value_onnx import int8_session
            net = int8_session(lambda: _token_logits(fp32()), self._sources(config),
                               threads=self.threads, kind=MODEL_NAME, outputs=GRAPH_OUTPUTS)
        else:
            from vilmo.judge.value_net import TorchNetwork
            net = TorchNetwork(fp32())
        cal = config.get("calibration", {})
        a, b = np.array([cal.get(n, [1.0, 0.0])[:2] for n in names], dtype=np.float32).T.copy()
        context = np.array([i for i, n in enumerate(names) if n.split(":")[0] in CONTEXT_HEADS],
                           dtype=np.int64)
        spec = WindowSpec(**{**config["window"],
                             "span_ignores": tuple(config["window"].get("span_ignores", ()))})
        ignored = np.array([names.index(n) for n in spec.span_ignores if n in names],
                           dtype=np.int64)
        return _Loaded(net, WordPieceTokenizer(encoder_path), spec, names, a, b, config, context,
                       _points(config.get("operating_points")),
                       _points(config.get("sentence_operating_points")), ignored,
                       (_points(config.get("plain_operating_points")),
                        _points(config.get("plain_sentence_operating_points"))))

    def _sources(self, config: dict[str, Any]) -> list[Path]:
        """The files the int8 graph is made from (its cache key)."""
        from vilmo.judge.embedder import packaged_model_path

        encoder_path = Path(self.encoder_path or config.get("encoder") or packaged_model_path())
        return [self.model_dir / "weights.safetensors", *sorted(encoder_path.glob("*.safetensors"))]

    def graph_path(self) -> Path:
        """Where the int8 graph is cached (whether or not it is there yet)."""
        from vilmo.judge.value_onnx import graph_path

        config = json.loads((self.model_dir / "config.json").read_text("utf-8"))
        return graph_path(MODEL_NAME, self._sources(config), outputs=GRAPH_OUTPUTS)

    def warm_up(self) -> None:
        """Build or load the graph now (``vilmo warmup``, start-up), not on the first check."""
        self._model()

    def pooled_logits(self, items: Sequence[ScoreInput]) -> Matrix:
        """Raw head logits per item, pooled over its windows as ``head_probabilities`` pools
        them (what calibration is fitted on): the whole reading of a text (its windows and, if
        long, its fine windows), without the sentence spans. So a head's Platt scaling does not
        depend on how many sentences a text has; the value scores then read each sentence with
        the same calibration, and the operating points are fitted on those scores (issue 17:
        with the spans in this pooling, dev recall at the 1 % benign rule was lower)."""
        logits, owner, kind = self._window_logits(items, sentences=False, alone=False,
                                                  reply=False)
        pooled = max_pool(logits, owner, len(items), floor=-np.inf)
        context = self._model().context_heads
        whole = kind == WHOLE
        pooled[:, context] = mean_pool(logits[whole][:, context],
                                        np.asarray(owner)[whole], len(items))
        return pooled

    def _window_logits(self, items: Sequence[ScoreInput], sentences: bool = True,
                       alone: bool = True, reply: bool = True,
                       ) -> tuple[Matrix, list[int], npt.NDArray[np.int8]]:
        """Head logits per row, the rows' item, and each row's kind (``WHOLE``, ``FINE``,
        ``SENTENCE``, ``ALONE``, ``ALONE_FINE``; ``vilmo.judge.window_rows``): sentence spans
        read inside a whole window ("pooled"), or the rows of those its pooled reading chose
        ("ranked"), come as ``SENTENCE`` rows after the rows run first. No spans if
        ``sentences`` is False; no windows alone unless ``alone``; windows after a prompt
        pooled by ``WindowSpec.whole_pooling`` if ``reply``, else over all their tokens."""
        from vilmo.judge.window_rows import pooled_spans, ranked_spans, reply_pooled

        m = self._model()
        read = self._rows(items, sentences, alone)
        pooling = read.prompted if reply and m.spec.whole_pooling == "reply" else {}
        out, tokens = self._run(read.rows, read.owner, {p.row for p in read.places} | {*pooling})
        if pooling:
            out = reply_pooled(out, tokens, read.rows, pooling, m.spec.reply_weight)
        owner, kind = read.owner, read.kind
        if read.places:
            spans = pooled_spans(tokens, read.places, len(m.names))
            span_owner = [p.item for p in read.places]
            if m.spec.span_reading == "ranked":
                chosen = ranked_spans(read.places, self._span_scores(spans), m.spec.span_rows,
                                      m.spec.span_gate)
                rows = [row for k in chosen for row in read.span_rows[k]]
                span_owner = [read.places[k].item for k in chosen
                              for _ in read.span_rows[k]]
                spans = self._run(rows, span_owner, set())[0]
            out = np.concatenate([out, spans])
            owner = [*owner, *span_owner]
            kind = [*kind, *[SENTENCE] * len(span_owner)]
        return out, owner, np.asarray(kind, dtype=np.int8)

    def _run(self, rows: list[list[int]], owner: list[int], wanted: set[int]
             ) -> tuple[Matrix, dict[int, Matrix]]:
        """Each row's logits, and the token logits of the ``wanted`` rows."""
        from vilmo.judge.value_onnx import AllOutputs, run_batches
        from vilmo.judge.windowing import pad_numpy
        m = self._model()
        out = np.zeros((len(rows), len(m.names)), dtype=np.float32)
        tokens: dict[int, Matrix] = {}
        if not rows:
            return out, tokens
        # Each item's rows batched apart by a fixed rule: int8 activations are quantised per
        # batch, so an item's scores must not depend on its neighbours in the call or the load.
        chunks = item_batches([len(r) for r in rows], owner, self.batch_size)
        padded = [pad_numpy([rows[r] for r in chunk]) for chunk in chunks]
        for chunk, both in zip(chunks, run_batches(AllOutputs(m.net), padded), strict=True):
            out[chunk] = both[0]
            tokens |= {r: both[1][k] for k, r in enumerate(chunk) if r in wanted}
        return out, tokens

    def _span_scores(self, logits: Matrix) -> Matrix:
        """A sentence span's highest composed violation probability, as its row would read
        (``_window_probs``): what "ranked" ranks the spans' pooled readings by."""
        m = self._model()
        probs = self._probs(logits, np.full(len(logits), SENTENCE, dtype=np.int8))
        vio, _ = compose(probs, m.names, m.config.get("compose", "product"),
                         m.config.get("compose_power", 1.0))
        out: Matrix = vio.max(axis=1)
        return out

    def _rows(self, items: Sequence[ScoreInput], sentences: bool, alone: bool) -> WindowRows:
        from vilmo.judge.window_rows import window_rows
        return window_rows(self._model().tokenizer, self._model().spec, items, sentences, alone)

    def _window_rows(self, items: Sequence[ScoreInput], sentences: bool, alone: bool,
                     ) -> tuple[list[list[int]], list[int], list[int]]:
        """``_window_logits``' token rows, their items and kinds (``window_rows``)."""
        read = self._rows(items, sentences, alone)
        return read.rows, read.owner, read.kind

    def _window_probs(self, items: Sequence[ScoreInput]
                      ) -> tuple[Matrix, list[int], npt.NDArray[np.int8]]:
        """Calibrated head probabilities per window, for the reply-level value scores. Fine
        windows (128-token cuts of a long reply, often mid-sentence) speak only for the
        reply-level heads: judging a scenario (``cm``) or an argument (ValueEval) needs its
        context, so those heads read them as 0. A sentence is a whole statement, so it keeps its
        own ``cm`` (is the act it describes wrong, as a whole window's is kept), and reads 0 for
        the other context heads."""
        logits, owner, kind = self._window_logits(items)
        return self._probs(logits, kind), owner, kind

    def _probs(self, logits: Matrix, kind: npt.NDArray[np.int8]) -> Matrix:
        m = self._model()
        probs = sigmoid(logits * m.a + m.b).astype(np.float32)
        probs[np.ix_((kind == FINE) | (kind == ALONE_FINE), m.context_heads)] = 0.0
        not_cm = m.context_heads[m.context_heads != m.names.index("cm")]
        probs[np.ix_(kind == SENTENCE, np.concatenate([not_cm, m.span_ignored]))] = 0.0
        return probs

    def head_probabilities(self, items: Sequence[ScoreInput]) -> Matrix:
        """Calibrated probability per head and item: the whole-text judgements (``cm``,
        ValueEval, ...) from the mean logit over the item's windows, the rest max-pooled.

        Value scores (``score``) keep every window's own ``cm``, so that a wrong act described
        at the end of a long reply still counts; this is the item-level reading the ETHICS and
        ValueEval figures and the calibration use."""
        logits, m = self.pooled_logits(items), self._model()
        return sigmoid(logits * m.a + m.b).astype(np.float32)

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str],
              calibrated: bool = True) -> list[ValueScores]:
        """Violation scores (0.5 = each value's operating point) and Schwartz upholds
        probabilities for each item; ``calibrated=False``: the composed probabilities before the
        operating-point rescaling (what the operating points are fitted on)."""
        unknown = [v for v in value_ids if v not in BUILTIN_VALUES]
        if unknown:
            raise UnknownValue(f"the built-in classifier has no head for {unknown}")
        m = self._model()
        col, ucol = ({v: j for j, v in enumerate(ids)} for ids in (BUILTIN_VALUES, SCHWARTZ))
        out = []
        for item, (whole, sentences, ups) in zip(items, self.readings(items), strict=True):
            # A plain text: per reading its own points if the config has them, else the reply's.
            own = (None, None) if given_prompt(item.prompt) else m.plain_operating
            points = (None, None) if not calibrated else (
                own[0] if own[0] is not None else m.operating,
                own[1] if own[1] is not None else m.sentence_operating)
            vio = rescaled(whole, sentences, *points)
            out.append(ValueScores(
                {v: float(vio[col[v]]) for v in value_ids},
                {v: float(ups[ucol[v]]) for v in value_ids if v in ucol}))
        return out

    def readings(self, items: Sequence[ScoreInput]) -> list[_Reading]:
        """Per item, the composed violation probabilities of the whole reading (its windows and
        fine windows) and of the sentence reading (its sentence spans; zeros for a text of one
        sentence), before any rescaling, and the Schwartz upholds probabilities: what the
        operating points are fitted on (``vilmo.train.operating.operating_points``)."""
        keys = [(given_prompt(it.prompt), it.response) for it in items]
        with self._lock:
            known = {k: self._cache[k] for k in keys if k in self._cache}
            elsewhere = {k: self._reading[k] for k in keys
                         if k not in known and k in self._reading}
            todo = list(dict.fromkeys(k for k in keys if k not in known and k not in elsewhere))
            mine: dict[tuple[str | None, str], Future[_Reading]] = {k: Future() for k in todo}
            self._reading.update(mine)
        try:
            fresh = dict(zip(todo, self._values([ScoreInput(r, p) for p, r in todo]) if todo
                             else [], strict=True))
            known.update(fresh)
            self._remember(fresh)
            for key, future in mine.items():
                future.set_result(fresh[key])
        except BaseException as error:
            for future in mine.values():
                future.set_exception(error)
            raise
        finally:
            with self._lock:
                self._reading = {k: f for k, f in self._reading.items() if k not in mine}
        # Only after this call's own texts are read: two callers never wait for each other.
        known.update({k: future.result() for k, future in elsewhere.items()})
        return [known[k] for k in keys]

    def _remember(self, results: dict[tuple[str | None, str], _Reading]) -> None:
        if self._cache_size <= 0:
            return
        with self._lock:
            for key, res in results.items():
                self._cache[key] = res
                self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _values(self, items: Sequence[ScoreInput]) -> list[_Reading]:
        m = self._model()
        probs, owner, kind = self._window_probs(items)
        rows = np.asarray(owner, dtype=np.int64)
        span, bare = kind == SENTENCE, (kind == ALONE) | (kind == ALONE_FINE)
        probs = heads_read_alone(probs, rows, kind == WHOLE, bare, m.names, *(
            m.config.get(key, "whole") for key in ("foundation_reading", "cm_reading")))
        vio, ups = compose(probs, m.names, m.config.get("compose", "product"),
                           m.config.get("compose_power", 1.0))
        paired = ~span & ~bare
        whole = max_pool(vio[paired], rows[paired], len(items))
        if bare.any():
            whole = mix_alone(whole, max_pool(vio[bare], rows[bare], len(items)),
                              np.bincount(rows[bare], minlength=len(items)) > 0,
                              m.spec.alone_weight)
        sentences = max_pool(vio[span], rows[span], len(items))
        ups_p = max_pool(ups[~bare], rows[~bare], len(items))
        return [(whole[i], sentences[i], ups_p[i]) for i in range(len(items))]


def _token_logits(net: ValueNet) -> TokenLogitsNet:
    from vilmo.judge.value_net import TokenLogitsNet  # torch: only to export the graph
    return TokenLogitsNet(net)


def _points(points: dict[str, float] | None) -> Matrix | None:
    return (np.array([points[v] for v in BUILTIN_VALUES], dtype=np.float32)
            if points else None)
