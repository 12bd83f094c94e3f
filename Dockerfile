# The kdr image: one static binary and the CA bundle, nothing else (no
# shell). deploy/ runs it as `kdr agent`.
#   docker build --build-arg VERSION=$(cat VERSION) --build-arg REVISION=$(git rev-parse --short=12 HEAD) \
#     -t ghcr.io/kdr-io/kdr:$(cat VERSION) .
# `make image` builds the same content without docker (bin/kdr-image.tar, an
# OCI archive written by hack/image, reproducibly); keep the files, ENV,
# ENTRYPOINT and LABELs below in step with its flags.
# No time zone data: the binary embeds it (time/tzdata).

ARG VERSION=dev
ARG REVISION=unknown

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/kdr-io/kdr/internal/version.Version=${VERSION}" \
      -o /out/kdr ./cmd/kdr

FROM scratch
ARG VERSION
ARG REVISION
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/kdr /usr/local/bin/kdr
ENV PATH=/usr/local/bin:/usr/bin:/bin
ENTRYPOINT ["kdr"]
LABEL org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.title=kdr \
      org.opencontainers.image.source=https://github.com/kdr-io/kdr
