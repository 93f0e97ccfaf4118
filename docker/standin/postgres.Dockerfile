# Stand-in for postgres:16: Debian bookworm's PostgreSQL 15, with an entrypoint that makes the cluster from
# POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB on an empty data folder as the official image does
# (password authentication over TCP), and runs it as the postgres user.
ARG DEBIAN_IMAGE=blackvip-standin/debian:bookworm
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
