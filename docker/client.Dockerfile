# The training client: torch for the Coordinator, never open_clip (the build fails if it is importable).
# Build arguments as in server.Dockerfile (the client always takes torch's CPU variant); the lines up to the
# torch layer are the same as there, so the two images share that layer.
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
COPY digits ./digits
COPY client ./client
# The project itself: its dependency ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[client]" \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('open_clip') is not None)" \
    && python -c "import client.training.loop" \
    && useradd --create-home --uid 1000 blackvip \
    && mkdir -p /results \
    && chown blackvip /results
USER 1000
ENV BLACKVIP_URL=http://server:8000
VOLUME ["/results"]
ENTRYPOINT ["blackvip"]
