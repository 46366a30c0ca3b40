# syntax=docker/dockerfile:1
# The rsp name server (plus the rsp CLI, for debugging) as a static binary
# on a distroless base. From the repository root:
#
#   docker build -f deploy/docker/nameserver.Dockerfile -t rsp-nameserver .
#   docker run --rm rsp-nameserver --help
#
# Configure it with RSP_* environment variables (RSP_NATS, RSP_CREDS,
# RSP_ACCOUNT_JWT, RSP_OPERATOR_KEY, RSP_SCOPE, RSP_REPLICAS; see deploy/k8s/).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags='-s -w' -o /out/ ./services/nameserver ./clients/rsp

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# uid/gid 65532 (nonroot); the name server needs no writable path in --nats mode.
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/nameserver"]
