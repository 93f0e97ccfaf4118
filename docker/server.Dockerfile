# The black-box CLIP service. TORCH_VARIANT=cpu (default) takes PyTorch's CPU wheels;
# TORCH_VARIANT=cuda takes the CUDA build from PyPI (run it with a GPU reserved, docker-compose.gpu.yml).
FROM python:3.11-slim
ARG TORCH_VARIANT=cpu
WORKDIR /app
RUN if [ "$TORCH_VARIANT" = "cpu" ]; then \
        pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu; \
    else \
        pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1; \
    fi
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
    BLACKVIP_PORT=8000 \
    BLACKVIP_LEDGER=/data/ledger.sqlite3 \
    HF_HOME=/cache
VOLUME ["/data", "/cache"]
EXPOSE 8000
ENTRYPOINT ["blackvip-server"]
