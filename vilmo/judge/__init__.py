"""The value judge: the classifier protocol, the built-in model (network, heads, ONNX runtime),
the zero-shot and LLM judges, the per-policy judge, the micro-batcher and the text encoder."""
