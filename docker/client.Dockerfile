# The training client: torch for the Coordinator, never open_clip (the build fails if it is importable).
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu
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
