# The vilmo gateway. CPU-only torch keeps the image small (the value models run on CPU); it is
# used once, by `vilmo warmup`, to build the ONNX graphs the gateway serves from.
FROM python:3.11-slim
WORKDIR /app
ENV LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
    VILMO_CACHE_DIR=/opt/vilmo-cache
COPY pyproject.toml constraints.txt README.md ./
COPY vilmo ./vilmo
COPY proxy ./proxy
COPY localllm ./localllm
# A regular (not editable) install: the policies and models are read from the installed package.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-cache-dir -c constraints.txt . \
 && rm -rf /app/vilmo /app/proxy /app/localllm \
 && vilmo warmup
# The gateway holds the upstream key and the client keys: it runs as a user of its own (uid
# 10001, no login), which owns only what the gateway writes: /state (compose's config puts the
# SQLite store and the audit spool there; compose mounts a named volume on it, which Docker
# creates owned as this folder is), its home (the store's default, ~/.local/state/vilmo, when
# run without a config) and the graph cache's folders (a graph missing from them is built
# there; the graphs built above stay root's, read-only to it, and are not copied into a layer).
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/vilmo \
        --shell /usr/sbin/nologin vilmo \
 && mkdir -p /state \
 && chown 10001:10001 /state /opt/vilmo-cache /opt/vilmo-cache/onnx
USER 10001:10001
EXPOSE 4000
# `vilmo serve` runs the server edge (proxy/server.py: httptools, or h11 where httptools is not
# installed; read deadline, head and connection limits, lingering close); do not start uvicorn
# on proxy.app directly, which would run without them.
ENTRYPOINT ["vilmo", "serve", "--host", "0.0.0.0", "--port", "4000"]
