# Stand-in for python:3.11-slim: Debian bookworm's Python 3.11 in a virtual environment on the PATH, so
# `python` and `pip install` work as in the official image. The machine's extra CA certificates (certs/)
# are trusted, for pip behind a TLS-inspecting proxy.
ARG DEBIAN_IMAGE=blackvip-standin/debian:bookworm
FROM ${DEBIAN_IMAGE}
COPY certs/ /usr/local/share/ca-certificates/
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
    && update-ca-certificates \
    && python3 -m venv /usr/local/python \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/local/python/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    LANG=C.UTF-8
CMD ["python3"]
