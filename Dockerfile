# Serving image for KirchhoffNet Serve: the BentoML service with the trained zoo baked in.
#
#   docker build -t kirchhoffnet-serve .                       # CPU torch (default)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 \
#                -t kirchhoffnet-serve:cuda .                  # CUDA torch; run with --gpus all
#   docker run -p 3000:3000 kirchhoffnet-serve
#
# Kept in step with the Dockerfile BentoML generates from bentofile.yaml (same Python,
# system packages, port and `bentoml serve` entrypoint; tests/test_service_build.py checks).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BENTOML_HOME=/home/bentoml/bentoml \
    BENTOML_DO_NOT_TRACK=True \
    OMP_NUM_THREADS=1

# ngspice: the circuit simulator behind the exported netlists
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ngspice \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1034 bentoml

WORKDIR /home/bentoml/app
COPY --chown=1034:1034 . .

# torch from the chosen wheel index (CPU by default), everything else from PyPI; gcc only
# while the engine's compiled RK4 (models/_rk4_*.c, setup.py) is built, then removed.
# Editable: `bentoml serve` imports the code from this directory, so the extension is built
# here, next to its source (a plain install would put it only in site-packages).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" -e . \
    && python -c "import models._rk4" \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

USER 1034
# import the zoo checkpoints into the image's BentoML model store
RUN knet store

EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]
ENTRYPOINT ["bentoml", "serve", "service.service:KirchhoffNetService", "--host", "0.0.0.0", "--port", "3000"]
