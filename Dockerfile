# relay in a container: docs/deploy.md (Container).
#
#   docker build -t relay .                  (podman build --format docker -t relay . keeps HEALTHCHECK)
#   docker run -v $PWD/white.yaml:/etc/relay/white.yaml:ro -p 7000:7000 -p 20000-20999:20000-20999 relay
#
# BASE_IMAGE must have Node.js 20 and npm (and apt-get for the build stage's compiler).
ARG BASE_IMAGE=docker.io/library/node:20-bookworm-slim

# Build: the package is packed (prepack builds dist/ and the prebuilt engine) and installed into
# /opt/relay, which also builds the V8 memory helper for this image's Node. Compilers stay here.
FROM ${BASE_IMAGE} AS build
# Behind a TLS-intercepting proxy: mount its CA into the build and name it here
# (podman build -v /etc/ssl/certs/ca-certificates.crt:/run/ca.crt:ro --build-arg NODE_EXTRA_CA_CERTS=/run/ca.crt).
ARG NODE_EXTRA_CA_CERTS
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
COPY scripts ./scripts
COPY native ./native
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.api.json LICENSE README.md ./
COPY bin ./bin
COPY src ./src
COPY test ./test
COPY bench ./bench
COPY schema ./schema
COPY examples ./examples
COPY docs ./docs
COPY deploy ./deploy
RUN npm pack --pack-destination /tmp \
 && npm install --global --prefix /opt/relay --no-audit --no-fund /tmp/relay-tunnel-relay-*.tgz \
 && /opt/relay/bin/relay --version

# Run: Node and the installed package, no compiler, not root.
FROM ${BASE_IMAGE}
RUN groupadd --system relay && useradd --system --gid relay --no-create-home --shell /usr/sbin/nologin relay
COPY --from=build /opt/relay /opt/relay
# MALLOC_ARENA_MAX: as the systemd units set it (docs/deploy.md, "Memory").
ENV PATH=/opt/relay/bin:$PATH \
    RELAY_LOG_FORMAT=json \
    MALLOC_ARENA_MAX=2 \
    RELAY_HEALTH_URL=http://127.0.0.1:9100/healthz
USER relay
WORKDIR /var/lib/relay
# The config is a mounted file: /etc/relay/white.yaml (or gray.yaml, with the command changed).
# Its metrics.listen (white) or status.listen (gray) must serve RELAY_HEALTH_URL.
EXPOSE 7000 9100
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "require('http').get(process.env.RELAY_HEALTH_URL, (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
ENTRYPOINT ["relay"]
CMD ["white", "--config", "/etc/relay/white.yaml", "--no-console"]
