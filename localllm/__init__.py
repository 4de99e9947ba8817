"""localllm: an OpenAI-compatible server for a small local model (Gemma 3 270M base, GGUF).

For offline runs of `vilmo eval` and the gateway without a provider. It lives outside the
``vilmo`` library because it serves HTTP (Starlette); `vilmo local-llm` reaches it through the
``vilmo.commands`` entry point. The model is a *base* model: it continues text and follows no
instructions, so it exercises the plumbing, not alignment.
"""
