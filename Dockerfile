# floe: multi-stage build. The builder compiles the release binary (the
# bundled librdkafka needs a C toolchain, make and zlib); the runtime image
# has only the binary, CA certificates and a non-root user.
#   docker build -t floe .
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config zlib1g-dev libssl-dev python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin floe \
 && cp target/release/floe /usr/local/bin/floe

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/floe --create-home floe
COPY --from=build /usr/local/bin/floe /usr/local/bin/floe
USER floe
WORKDIR /var/lib/floe
VOLUME ["/var/lib/floe"]
EXPOSE 8080
# /readyz answers 200 once recovery has finished.
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --retries=3 \
  CMD curl --fail --silent http://127.0.0.1:8080/readyz || exit 1
# SIGTERM drains the shard inboxes and flushes the sink before exiting 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["floe"]
CMD ["serve", "--config", "/etc/floe/floe.toml"]
