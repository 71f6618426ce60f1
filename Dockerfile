# herd's container image: `docker build -t herd .` (see README, "Containers and Kubernetes").
# Build stage: the release binary, on the Rust image (Debian bookworm, so the runtime's glibc
# matches).
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p herd \
 && strip target/release/herd

# Runtime: Debian slim (glibc, bash for the health check, tini, nothing else), a non-root user.
# tini is process 1: it passes signals on to herd and reaps the processes an app leaves behind
# (a grandchild whose parent exited is handed to process 1, and herd waits only for its own).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/herd --no-create-home herd \
 && mkdir -p /etc/herd /var/lib/herd \
 && chown herd:herd /var/lib/herd
COPY --from=build /src/target/release/herd /usr/local/bin/herd
COPY deploy/herd.toml /etc/herd/herd.toml
ENV HERD_LOG=info HERD_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/herd
# 3500 the sidecar API (loopback in the default config), 3501 the mesh, 8000 a gateway listener,
# 9901 admin (/healthz, /metrics, dashboard).
EXPOSE 3500 3501 8000 9901
# GET /healthz on the admin listener, with bash alone (no curl in the image).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9901 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
# SIGTERM stops herd gracefully (gateway drain, instances retired within kill_timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "herd", "-c", "/etc/herd/herd.toml"]
CMD ["up"]
