# syntax=docker/dockerfile:1
# Serving image (the default target): ONNX Runtime only, no torch.
#   docker build -t latentserve .
# With torch (TorchScript runtime, training, GPU via a CUDA build of torch):
#   docker build --target torch -t latentserve:torch .
#   docker build --target torch --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t latentserve:gpu .
# ONNX Runtime on CUDA would need the onnxruntime-gpu wheel and the CUDA libraries; the GPU
# image serves with LATENTSERVE_RUNTIME=torchscript instead, whose wheel bundles CUDA.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ----- builders: a virtualenv under /opt/venv, copied whole into the runtime stages --------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY training ./training
COPY service ./service
COPY artifact ./artifact
COPY latentserve ./latentserve
RUN pip install --no-cache-dir "/src[serve]"

FROM builder AS builder-torch
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch first, from its own index: a bare `torch` requirement would pull the multi-GB CUDA build.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir "/src[train]"

# ----- runtime base: non-root user, model volume, health check ------------------------------------
FROM ${PYTHON_IMAGE} AS base
RUN useradd --create-home --uid 10001 --user-group latentserve \
    && mkdir /models \
    && chown latentserve:latentserve /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LATENTSERVE_MODELS=/models \
    LATENTSERVE_HOST=0.0.0.0 \
    LATENTSERVE_PORT=8000
WORKDIR /home/latentserve
EXPOSE 8000
# No curl in a slim image: the check is a few lines of Python hitting /readyz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "service.healthcheck"]
ENTRYPOINT ["latentserve"]
CMD ["serve"]

# ----- with torch: TorchScript runtime, `latentserve train`, CUDA with a CUDA index -------------
FROM base AS torch
COPY --from=builder-torch /opt/venv /opt/venv
USER 10001:10001

# ----- the serving image (default target): no torch ----------------------------------------------
FROM base AS serve
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
