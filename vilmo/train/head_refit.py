"""Refit rows of the judge's head on frozen features (no retraining): the ``topic:*`` rows
(``refit_topics``), or any named rows (``refit_heads``: ``cm``, ``foundation:*``).

A full retraining takes about 45 minutes on the shared host; the topic heads are a linear read of
the pooled features the served network already computes. So the encoder, the trained layers and
every other row of the head stay as they are, and only the topic rows are refit: on the pooled
features of each training text's first serving window, read through the same int8 graph the
gateway runs, by the training's masked binary cross-entropy with positives weighted by the
square root of each head's negative-to-positive ratio (at most 20), plus an L2 pull towards the
shipped rows (``l2``), warm-started from them. Chosen on dev (model card, "Held-out figures");
the Platt scaling and operating points are then refit by ``recalibrate``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vilmo.datasets.readers import Example
from vilmo.judge.classifier import ScoreInput, given_prompt
from vilmo.train.classifier import _label_arrays, recalibrate
from vilmo.train.examples import Sizes, build

if TYPE_CHECKING:
    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.types import Matrix

POOLED_OUTPUT = "/Div_output_0"
"""The served graph's pooled features: the head's input (``ValueNet.upper``'s mean pooling)."""
HIDDEN_OUTPUT = "/layer.5/output/LayerNorm/LayerNormalization_output_0"
"""The last layer's states per token, which the head reads for ``token_logits``."""
MAX_POSITIVE_WEIGHT = 20.0
TOPIC_L2 = 0.004215
"""The pull towards the shipped rows, chosen on dev (model card): 0.003 as the experiment
wrote its loss, averaged over the topic and foundation labels together (the foundation rows
fixed), which is 0.004215 of this loss averaged over the topic labels alone."""


def pooled_features(model: BuiltinClassifier, keys: Sequence[tuple[str | None, str]],
                    reply_tokens: bool = False) -> Matrix:
    """The head's input for each (prompt, reply): the first whole window as served, each text
    in its own batch (int8 activations are quantised per batch), through the cached int8 graph
    with its pooled tensor added as an output. ``reply_tokens``: a window after a prompt pooled
    over its reply's own tokens instead (the mean of the last states between the prompt's head
    and the closing ``[SEP]``: what ``window.whole_pooling`` "reply" serves); a plain text as
    before."""
    import onnx
    import onnxruntime as ort

    from vilmo.judge.value_model import WHOLE
    from vilmo.judge.value_onnx import SESSION_FUSIONS_OFF, session_options
    from vilmo.judge.windowing import pad_numpy

    model.warm_up()
    graph = onnx.load(str(model.graph_path()))
    names = [n for node in graph.graph.node for n in node.output]
    for name in (POOLED_OUTPUT, HIDDEN_OUTPUT):
        if name not in names:
            raise ValueError(f"the graph has no {name}: the export changed")
        graph.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), session_options(model.threads),
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(SESSION_FUSIONS_OFF))
    (pooled,) = [o for o in session.get_outputs() if o.name == POOLED_OUTPUT]
    out = np.zeros((len(keys), pooled.shape[-1] or 384), np.float32)
    for i, (prompt, reply) in enumerate(keys):
        read = model._rows([ScoreInput(reply, prompt)], sentences=False, alone=False)
        row = read.kind.index(WHOLE)
        ids, mask = pad_numpy([read.rows[row]])
        head, end = read.prompted.get(row, 0), len(read.rows[row]) - 1
        if reply_tokens and end > head > 0:
            hidden = session.run([HIDDEN_OUTPUT], {"ids": ids, "mask": mask})[0][0]
            out[i] = hidden[head:end].mean(axis=0)
        else:
            out[i] = session.run([POOLED_OUTPUT], {"ids": ids, "mask": mask})[0][0]
    return out


def fit_rows(x: Matrix, y: Matrix, m: Matrix, w0: Matrix, b0: Matrix, l2: float,
             steps: int = 2000) -> tuple[Matrix, Matrix]:
    """Rows ``w0``, ``b0`` refit: masked BCE with positives weighted by sqrt(neg/pos) (1 to
    ``MAX_POSITIVE_WEIGHT``) + ``l2`` * ||W - w0||^2, by L-BFGS from ``w0`` run to convergence
    (the objective is convex, so the rows do not depend on the order of the examples; 200
    steps stopped 5 % away from it, and that moved the dev figures by a text)."""
    import torch

    pos = (y * m).sum(0)
    neg = ((1 - y) * m).sum(0)
    weight = np.sqrt(np.clip(neg / np.maximum(pos, 1.0), 1.0, MAX_POSITIVE_WEIGHT))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    mt = torch.from_numpy(m) * torch.where(yt > 0, torch.from_numpy(weight.astype(np.float32)),
                                           torch.ones_like(yt))
    w_start, b_start = torch.from_numpy(w0.copy()), torch.from_numpy(b0.copy())
    dw = torch.zeros_like(w_start, requires_grad=True)
    db = torch.zeros_like(b_start, requires_grad=True)
    opt = torch.optim.LBFGS([dw, db], max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12, history_size=50)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xt @ (w_start + dw).T + b_start + db
        loss: torch.Tensor = (bce(logits, yt) * mt).sum() / mt.sum() + l2 * dw.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return (w_start + dw).detach().numpy(), (b_start + db).detach().numpy()


def replace_rows(weights: Path, rows: Sequence[int], w: Matrix, b: Matrix) -> None:
    """Write new head rows into the packed weights (``vilmo.judge.value_net.pack``: int8 with a
    scale per row, bias fp16); every other tensor and row is kept byte for byte."""
    import torch
    from safetensors.torch import load_file, save_file

    from vilmo.judge.value_net import SCALE_SUFFIX, pack

    stored = load_file(str(weights))
    packed = pack({"w": torch.from_numpy(np.ascontiguousarray(w, np.float32))})
    index = torch.tensor(list(rows))
    stored["head.weight"][index] = packed["w"]
    stored["head.weight" + SCALE_SUFFIX][index] = packed["w" + SCALE_SUFFIX]
    stored["head.bias"][index] = torch.from_numpy(np.asarray(b, np.float32)).to(torch.float16)
    save_file(stored, str(weights))


def training_examples(data_root: Path, out_dir: Path) -> tuple[list[Example], list[str]]:
    """The training split the weights in ``out_dir`` were trained with (same sizes and seed),
    and the head names."""
    config: dict[str, Any] = json.loads((out_dir / "config.json").read_text("utf-8"))
    training = config.get("training", {})
    settings = training.get("settings", {})
    known = set(Sizes.__dataclass_fields__)
    train, _ = build(data_root, Sizes(**{k: v for k, v in training.get("sizes", {}).items()
                                         if k in known}),
                     settings.get("seed", 13), settings.get("valueeval_dev_by", "premise"))
    return train, list(config["heads"])


def selected(names: Sequence[str], prefixes: Sequence[str]) -> list[str]:
    """The heads refit: those named exactly in ``prefixes`` or starting with one ending ":"."""
    return [n for n in names
            if any(n == p or (p.endswith(":") and n.startswith(p)) for p in prefixes)]


def fit_heads(out_dir: Path, train: Sequence[Example], names: Sequence[str],
              heads: Sequence[str], l2: float,
              features: dict[tuple[str | None, str], np.ndarray] | None = None,
              story_weight: float = 1.0, reading: str = "all",
              reply_features: dict[tuple[str | None, str], np.ndarray] | None = None,
              ) -> dict[str, Any]:
    """Refit the rows ``heads`` of the weights in ``out_dir`` in place (module doc) on the
    examples of ``train`` labelled for any of them; ``features``: pooled features already read
    (by key), filled with those it lacks. ``story_weight``: the weight of the written story
    continuations (``stories_train``: 18 % of the ``cm`` examples, the only ones that say
    what a story's violation of fairness, loyalty or authority reads like). ``reading``: the
    features of an example after a prompt, pooled over every token ("all", as the Platt
    scaling reads it), over the reply's tokens ("reply", as a whole window after a prompt is
    served), or both, each at half weight ("both"); ``reply_features`` caches the reply-token
    features as ``features`` does the others. The fit's summary."""
    from safetensors.torch import load_file

    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.judge.value_net import unpack

    rows = [list(names).index(n) for n in heads]
    labelled: list[Example] = [e for e in train if any(n in e.labels for n in heads)]
    keys = list(dict.fromkeys((given_prompt(e.prompt), e.response) for e in labelled))
    known = {} if features is None else features
    missing = [k for k in keys if k not in known]
    if missing:
        model = BuiltinClassifier(out_dir, cache_size=0, threads=1)
        known.update(zip(missing, pooled_features(model, missing), strict=True))
    x = np.stack([known[(given_prompt(e.prompt), e.response)] for e in labelled])
    y, m = (a[:, rows] for a in _label_arrays(labelled, list(names)))
    if story_weight != 1.0:
        from vilmo.datasets.readers import judge_rows

        stories = {str(r["continuation"]) for r in judge_rows("stories_train")}
        m = m * np.where([e.source == "judge" and e.response in stories for e in labelled],
                         np.float32(story_weight), np.float32(1.0))[:, None]
    if reading != "all":
        x, y, m = _with_reply_reading(out_dir, labelled, x, y, m, reading,
                                      {} if reply_features is None else reply_features)
    shipped = unpack(load_file(str(out_dir / "weights.safetensors")))
    w0 = shipped["head.weight"].numpy()[rows]
    b0 = shipped["head.bias"].numpy()[rows]
    w, b = fit_rows(x, y, m, w0, b0, l2)
    replace_rows(out_dir / "weights.safetensors", rows, w, b)
    return {"heads": list(heads), "l2": l2, "story_weight": story_weight, "reading": reading,
            "positive_weight": f"sqrt(neg/pos), 1 to {MAX_POSITIVE_WEIGHT:g}",
            "train_examples": len(labelled), "train_texts": len(keys),
            "moved": round(float(np.linalg.norm(w - w0) / np.linalg.norm(w0)), 4)}


def _with_reply_reading(out_dir: Path, labelled: Sequence[Example], x: Matrix, y: Matrix,
                        m: Matrix, reading: str,
                        known: dict[tuple[str | None, str], np.ndarray],
                        ) -> tuple[Matrix, Matrix, Matrix]:
    """``fit_heads``' examples after a prompt read over their reply's tokens: in place of the
    all-token reading ("reply"), or beside it with both at half weight ("both")."""
    if reading not in ("reply", "both"):
        raise ValueError(f"reading must be all, reply or both, not {reading!r}")
    prompted = np.array([given_prompt(e.prompt) is not None for e in labelled], dtype=bool)
    keys = list(dict.fromkeys((given_prompt(e.prompt), e.response)
                              for e, p in zip(labelled, prompted, strict=True) if p))
    missing = [k for k in keys if k not in known]
    if missing:
        from vilmo.judge.value_model import BuiltinClassifier

        model = BuiltinClassifier(out_dir, cache_size=0, threads=1)
        known.update(zip(missing, pooled_features(model, missing, reply_tokens=True),
                         strict=True))
    reply = np.stack([known[(given_prompt(e.prompt), e.response)]
                      for e, p in zip(labelled, prompted, strict=True) if p])
    if reading == "reply":
        x = x.copy()
        x[prompted] = reply
        return x, y, m
    half = np.where(prompted, np.float32(0.5), np.float32(1.0))[:, None]
    return (np.concatenate([x, reply]), np.concatenate([y, y[prompted]]),
            np.concatenate([m * half, m[prompted] * 0.5]))


def refit_heads(data_root: Path, out_dir: Path, prefixes: Sequence[str], l2: float,
                alone_weight: float | None = None, record: str = "head_refit",
                story_weight: float = 1.0) -> dict[str, Any]:
    """Refit the head rows named by ``prefixes`` (``selected``) of the weights in ``out_dir``
    on the training split they were trained with, then their Platt scaling and operating
    points (``recalibrate``); the new config, the fit recorded under ``training.<record>``."""
    train, names = training_examples(data_root, out_dir)
    summary = fit_heads(out_dir, train, names, selected(names, prefixes), l2,
                        story_weight=story_weight)
    config = recalibrate(data_root, out_dir, progress=False, alone_weight=alone_weight)
    if record == "topic_refit":
        summary.pop("heads")
        summary.pop("story_weight")
    config.setdefault("training", {})[record] = summary
    (out_dir / "config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return config


def refit_topics(data_root: Path, out_dir: Path, l2: float = TOPIC_L2,
                 alone_weight: float | None = None) -> dict[str, Any]:
    """Refit the topic rows of the weights in ``out_dir`` on the training split they were
    trained with (same sizes and seed), then their Platt scaling and operating points
    (``recalibrate``); the new config."""
    return refit_heads(data_root, out_dir, ["topic:"], l2, alone_weight, "topic_refit")
