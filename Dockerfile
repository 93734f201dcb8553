# fleetwatch's container image: one static binary on an empty base, running as non-root
# (uid 65532), as the cluster install (deploy/kubernetes) runs it. Build it with `make image`.
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=0.1.0-dev
ARG REVISION=
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
      -o /out/bin/fleetwatch ./cmd/fleetwatch && \
    mkdir -p /out/var/lib/fleetwatch /out/etc/fleetwatch && \
    cp deploy/kubernetes/base/fleetwatch.yml /out/etc/fleetwatch/fleetwatch.yml

FROM scratch
# TLS to members' API servers, Alertmanagers and hooks that use public certificates
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/bin/fleetwatch /bin/fleetwatch
COPY --from=build /out/etc/fleetwatch /etc/fleetwatch
COPY --from=build --chown=65532:65532 /out/var/lib/fleetwatch /var/lib/fleetwatch
USER 65532:65532
EXPOSE 9095
VOLUME ["/var/lib/fleetwatch"]
WORKDIR /var/lib/fleetwatch
ENTRYPOINT ["/bin/fleetwatch"]
CMD ["serve", "--config.file=/etc/fleetwatch/fleetwatch.yml", "--storage.tsdb.path=/var/lib/fleetwatch"]
