# The kdr image: one static binary on distroless (CA certificates and time
# zones, no shell). deploy/ runs it as `kdr agent`.
#   docker build --build-arg VERSION=$(git describe --tags --always) -t ghcr.io/kdr-io/kdr:TAG .

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/kdr-io/kdr/internal/version.Version=${VERSION}" \
      -o /out/kdr ./cmd/kdr

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/kdr /usr/local/bin/kdr
ENTRYPOINT ["kdr"]
