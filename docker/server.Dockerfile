# The black-box CLIP service. Build arguments:
#   PYTHON_IMAGE     the base (default the official python:3.11-slim; docker/base-images.sh makes a stand-in
#                    from Debian's packages where no image registry can be reached)
#   TORCH_VARIANT    cpu (default) or cuda (run it with a GPU reserved: docker-compose.gpu.yml)
#   TORCH_INDEX_URL  where pip finds torch: by default PyTorch's CPU wheel index for cpu and PyPI (its CUDA
#                    build) for cuda; any index that has torch 2.14.1 and torchvision 0.29.1 will do
# The first lines up to the torch layer are the same as client.Dockerfile's: the two images share that layer.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=
WORKDIR /app
RUN index="${TORCH_INDEX_URL}"; \
    if [ -z "$index" ] && [ "$TORCH_VARIANT" = "cpu" ]; then index=https://download.pytorch.org/whl/cpu; fi; \
    if [ -z "$index" ]; then index=https://pypi.org/simple; fi; \
    pip install --no-cache-dir --index-url "$index" torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY server ./server
# The project itself: its dependency ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[server,postgres]" \
    && useradd --create-home --uid 1000 blackvip \
    && mkdir -p /data /cache \
    && chown blackvip /data /cache
USER 1000
# Ledger in /data and the hub cache in /cache: both are volumes, so nothing is lost with the container.
ENV BLACKVIP_HOST=0.0.0.0 \
    BLACKVIP_IN_CONTAINER=1 \
    BLACKVIP_PORT=8000 \
    BLACKVIP_LEDGER=/data/ledger.sqlite3 \
    HF_HOME=/cache
VOLUME ["/data", "/cache"]
EXPOSE 8000
ENTRYPOINT ["blackvip-server"]
