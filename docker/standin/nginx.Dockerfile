# Stand-in for nginx:1.27: Debian bookworm's nginx 1.22 (and curl, as the balancer's health check uses),
# configured as the official image is: conf.d/*.conf only, logs to the container's output, in the
# foreground.
ARG DEBIAN_IMAGE=blackvip-standin/debian:bookworm
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx curl \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
