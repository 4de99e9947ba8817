"""Exporting a network to the ONNX graph the gateway serves (``vilmo.judge.value_onnx``
caches it): torch's export, the fusion for CPU (``fuse_for_cpu``: each layer's attention one
``Attention`` op, its GELU one op, so ONNX Runtime runs fewer, faster kernels) and dynamic int8
quantisation. Needs torch and onnx; serving needs neither."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from torch import nn

log = logging.getLogger(__name__)


def export_graph(net: nn.Module, target: Path, quantized: bool = True,
                 fused: bool | None = None) -> None:
    """Export ``net`` to ``target``, quantised if ``quantized``; fused for CPU
    (``fuse_for_cpu``) if ``fused`` (default: int8 graphs only, since ONNX Runtime's fp32
    ``Attention`` was slower than the unfused fp32 graph). ``fused=False`` with ``quantized``
    is the recipe of export 3 (the benchmark's baseline)."""
    fused = quantized if fused is None else fused
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="vilmo-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        ids = torch.full((2, 16), 1000, dtype=torch.long)
        restore = _eager_attention(net) if fused else []
        # A network may name several outputs (``onnx_outputs``): the first is per row, any
        # other per row and token (``vilmo.judge.value_net.TokenLogitsNet``).
        first, *per_token = tuple(getattr(net, "onnx_outputs", ("logits",)))
        axes = {"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
                first: {0: "batch"}, **{name: {0: "batch", 1: "tokens"} for name in per_token}}
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net, (ids, torch.ones_like(ids)), str(fp32), input_names=["ids", "mask"],
                    output_names=[first, *per_token], opset_version=17, dynamo=False,
                    dynamic_axes=axes)
        finally:
            for config, implementation in restore:
                setattr(config, "_attn_implementation", implementation)  # noqa: B010
        if fused:
            fused = _fused(fp32, restore[0][0] if restore else None)
        if not quantized:
            shutil.copyfile(fp32, target)
            return
        quiet = _DropPreprocessingHint()
        logging.getLogger().addFilter(quiet)
        try:
            import onnx

            quantize_dynamic(fp32, target, weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True,
                             op_types_to_quantize=QUANTIZED_OPS if fused else None,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            logging.getLogger().removeFilter(quiet)


def _fused(fp32: Path, config: object) -> bool:
    """Fuse ``fp32`` in place (``fuse_for_cpu``) and say whether it was: an export whose
    attention the fusion does not know (a future transformers or onnxruntime) is left unfused,
    the recipe of export 3 (slower, as accurate), rather than no graph at all; fewer fused
    attention blocks than the encoder has layers are served as they are, said in the log."""
    try:
        counts = fuse_for_cpu(fp32, fp32, int(getattr(config, "num_attention_heads", 0)),
                              int(getattr(config, "hidden_size", 0)))
    except Exception as exc:  # noqa: BLE001 - any graph the fusion cannot rewrite
        log.warning("exporting the graph unfused (slower): %s", exc)
        return False
    layers = int(getattr(config, "num_hidden_layers", 0))
    if counts.get("Attention", 0) < layers:
        log.warning("only %d of %d attention blocks were fused; the rest run unfused (slower)",
                    counts.get("Attention", 0), layers)
    return True


def _eager_attention(net: nn.Module) -> list[tuple[object, str]]:
    """Switch every attention block of ``net`` to transformers' eager attention (for the
    export only; the configs' old settings are returned to be restored): its graph is the
    pattern ONNX Runtime's BERT fusion recognises, SDPA's (a scale on each of Q and K) is not.
    Same arithmetic up to fp32 rounding."""
    restore: list[tuple[object, str]] = []
    seen: set[int] = set()
    for module in net.modules():
        config = getattr(module, "config", None)
        implementation = getattr(config, "_attn_implementation", None)
        if config is None or implementation is None or id(config) in seen:
            continue
        seen.add(id(config))
        restore.append((config, implementation))
        setattr(config, "_attn_implementation", "eager")  # noqa: B010
    return restore


def fuse_for_cpu(source: Path, target: Path, num_heads: int = 0,
                 hidden_size: int = 0) -> dict[str, int]:
    """Rewrite the fp32 MiniLM graph ``source`` with ONNX Runtime's fused CPU operators (each
    layer's attention one ``Attention``, its GELU one ``Gelu``; ``_fusion_options``) into
    ``target``; the fused ops' counts are returned. Unfused, the fp32 glue between the int8
    matrix products (attention's reshapes, transposes, masking and softmax; GELU's erf) was
    about two thirds of a call. The embeddings stay unfused (``EmbedLayerNormalization`` would
    swallow the mask into its own output, and the reader's halves are cut after them); the
    mask stays the raw 0/1 mask (any padding, as before). ``num_heads`` and ``hidden_size``:
    the encoder's (0: read from the graph). Raises
    ValueError where no attention block was fused (an export whose pattern the fusion does
    not know)."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(source))
    _drop_noop_casts(model)
    _scale_as_division(model)
    _one_input_per_layer(model)
    options = _fusion_options(FusionOptions("bert"))
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        optimized = optimize_model(model, model_type="bert", num_heads=num_heads,
                                   hidden_size=hidden_size,
                                   optimization_options=options, opt_level=0)
    finally:
        quiet.setLevel(level)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not fused.get("Attention"):
        raise ValueError(f"no attention block was fused in {source.name}: {fused}")
    optimized.save_model_to_file(str(target))
    return fused


def _fusion_options(options: FusionOptions) -> FusionOptions:
    """Attention and GELU fused; layer norms, residual adds and the embeddings left as they
    are (``SESSION_FUSIONS_OFF`` says why for the first two)."""
    options.enable_embed_layer_norm = False
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    options.enable_bias_gelu = False
    options.use_raw_attention_mask(True)
    return options


QUANTIZED_OPS = ["MatMul", "Gemm", "Gather", "Attention"]
"""What the fused recipe quantises: as before (the linear layers, the head, the embedding
tables), with the fused attention blocks' Q/K/V projections as ``QAttention``."""


def _drop_noop_casts(model: onnx.ModelProto) -> None:
    """Remove ``Cast`` nodes to the type their input already has (the exporter writes one
    after the additive attention mask, ``_additive``'s ``.to(dtype)``); it hides the mask
    pattern from the attention fusion."""
    from onnx import helper, shape_inference

    typed = shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*typed.graph.value_info, *typed.graph.input, *typed.graph.output)}
    graph = model.graph
    for node in [n for n in graph.node if n.op_type == "Cast"]:
        target = helper.get_attribute_value(node.attribute[0])
        if types.get(node.input[0]) != target or node.output[0] in {o.name for o in graph.output}:
            continue
        for other in graph.node:
            for at, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[at] = node.input[0]
        graph.node.remove(node)


def _one_input_per_layer(model: onnx.ModelProto) -> None:
    """Where one layer norm's output feeds several layers' attention blocks (the reader's two
    tops both read the shared bottom's output), every layer after the first reads its own copy
    of that layer norm (the same values; one more layer norm a call): the fusion matches a
    block only where its input feeds exactly that block's Q, K and V (an ``Identity`` between
    would be dropped before fusing). Layers are told apart by the exporter's node names
    (``/layer.4/attention/...``, ``/reader_layers.0/attention/...``)."""
    import onnx

    graph = model.graph
    made = {name: node for node in graph.node for name in node.output}
    readers: dict[str, dict[str, list[onnx.NodeProto]]] = {}
    for node in graph.node:
        if "/attention/" in node.name:
            layer = node.name.split("/attention/")[0]
            for name in node.input:
                readers.setdefault(name, {}).setdefault(layer, []).append(node)
    copies: dict[str, list[onnx.NodeProto]] = {}
    for tensor, layers in readers.items():
        norm = made.get(tensor)
        if norm is None or norm.op_type != "LayerNormalization" or len(norm.output) != 1:
            continue
        for layer, nodes in list(layers.items())[1:]:
            copy = onnx.NodeProto()
            copy.CopyFrom(norm)
            copy.name = f"{norm.name}{layer.replace('/', '_')}"
            copy.output[0] = f"{tensor}{layer.replace('/', '_')}"
            copies.setdefault(tensor, []).append(copy)
            for node in nodes:
                for at, name in enumerate(node.input):
                    if name == tensor:
                        node.input[at] = copy.output[0]
    if not copies:
        return
    ordered: list[onnx.NodeProto] = []
    for node in graph.node:  # each copy right after its original: still in topological order
        ordered.append(onnx.NodeProto())
        ordered[-1].CopyFrom(node)
        ordered.extend(copies.pop(node.output[0], []) if node.output else [])
    graph.ClearField("node")
    graph.node.extend(ordered)


def _scale_as_division(model: onnx.ModelProto) -> None:
    """Write eager attention's ``scores * head_size**-0.5`` as ``scores / head_size**0.5``
    (the same to an fp32 rounding): with a Mul, the fusion takes the scale for the mask's Mul
    and matches neither. Only a scalar Mul whose result is added to and then soft-maxed."""
    from onnx import numpy_helper

    graph = model.graph
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    constants = {node.output[0]: numpy_helper.to_array(node.attribute[0].t)
                 for node in graph.node
                 if node.op_type == "Constant" and node.attribute[0].name == "value"}
    for node in graph.node:
        after = users.get(node.output[0], []) if node.op_type == "Mul" else []
        if len(after) != 1 or after[0].op_type != "Add" or [
                n.op_type for n in users.get(after[0].output[0], [])] != ["Softmax"]:
            continue
        scale = constants.get(node.input[1])
        if scale is None or scale.size != 1 or scale.item() == 0:
            continue
        divisor = f"{node.output[0]}_divisor"
        graph.initializer.append(numpy_helper.from_array(
            (1.0 / scale.astype(np.float64)).astype(scale.dtype), divisor))
        node.op_type, node.input[1] = "Div", divisor


class _DropPreprocessingHint(logging.Filter):
    """The quantiser advises shape pre-processing on every call; dynamic int8 does not need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()
