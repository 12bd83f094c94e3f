# kdr: build, test, demo and benchmarks. Every tool the tests need is built
# from the Go module proxy into ./bin (hack/tools pins the versions) or
# installed from Debian; nothing else is downloaded.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)
export KDR_BIN_DIR := $(BIN)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/kdr-io/kdr/internal/version.Version=$(VERSION)

ETCD_BINS := $(BIN)/etcd $(BIN)/etcdctl $(BIN)/etcdutl
# kube-apiserver, kubeadm and kubectl for the kubeadm host tests
# (internal/testenv/kube.go). The version is stamped as Kubernetes' own build
# does (hack/lib/version.sh); unstamped binaries say v0.0.0-master and kubeadm
# cannot name the version it deploys.
KUBE_BINS := $(BIN)/kube-apiserver $(BIN)/kubeadm $(BIN)/kubectl
KUBE_VERSION := $(shell awk '$$1 == "require" && $$2 == "k8s.io/kubernetes" { print $$3 }' hack/tools/kube/go.mod)
KUBE_VERSION_PARTS := $(subst ., ,$(patsubst v%,%,$(KUBE_VERSION)))
KUBE_LDFLAGS := $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
  -X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=$(word 1,$(KUBE_VERSION_PARTS)) \
  -X $(p).gitMinor=$(word 2,$(KUBE_VERSION_PARTS)) -X $(p).gitTreeState=clean)
TOOLS := $(ETCD_BINS) $(BIN)/minio $(BIN)/staticcheck $(KUBE_BINS) $(BIN)/promtool
DEBIAN_PKGS := age zstd poppler-utils openssh-client rsync

.PHONY: all build tools debian-tools test lint unit fuzz bench demo clean

all: build

build: $(BIN)/kdr

$(BIN)/kdr: $(shell find . -name '*.go' -not -path './hack/*' -not -path './bin/*') config/example.yaml go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/kdr

tools: $(TOOLS) debian-tools

$(ETCD_BINS) &: hack/tools/etcd/go.mod hack/tools/etcd/go.sum hack/tools/etcd/cmd/etcd/main.go
	cd hack/tools/etcd && $(GO) build -o $(BIN)/etcd ./cmd/etcd \
	  && $(GO) build -o $(BIN)/etcdctl go.etcd.io/etcd/etcdctl/v3 \
	  && $(GO) build -o $(BIN)/etcdutl go.etcd.io/etcd/etcdutl/v3

$(KUBE_BINS) &: hack/tools/kube/go.mod hack/tools/kube/go.sum
	cd hack/tools/kube && $(GO) build -ldflags '$(KUBE_LDFLAGS)' -o $(BIN)/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
	  && $(GO) build -ldflags '$(KUBE_LDFLAGS)' -o $(BIN)/kubeadm k8s.io/kubernetes/cmd/kubeadm \
	  && $(GO) build -ldflags '$(KUBE_LDFLAGS)' -o $(BIN)/kubectl k8s.io/kubernetes/cmd/kubectl

$(BIN)/minio: hack/tools/minio/go.mod hack/tools/minio/go.sum
	cd hack/tools/minio && $(GO) build -o $@ github.com/minio/minio

$(BIN)/staticcheck: hack/tools/lint/go.mod hack/tools/lint/go.sum
	cd hack/tools/lint && $(GO) build -o $@ honnef.co/go/tools/cmd/staticcheck

# promtool checks and unit-tests the alerting rules in deploy/monitoring.
$(BIN)/promtool: hack/tools/prometheus/go.mod hack/tools/prometheus/go.sum
	cd hack/tools/prometheus && $(GO) build -o $@ github.com/prometheus/prometheus/cmd/promtool

# Debian packages: age and zstd for the break-glass tests, ssh-keygen to
# verify signatures as an operator without kdr does, rsync for the
# runbook's restore-files commands, pdftotext to read
# rendered PDFs. Installed only when missing.
debian-tools:
	@missing=""; for c in age:age zstd:zstd pdftotext:poppler-utils ssh-keygen:openssh-client rsync:rsync; do \
	  command -v $${c%%:*} >/dev/null || missing="$$missing $${c##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# staticcheck and vet read the module graph once; -p keeps the 2-core
# machines that run this responsive.
GO_TEST_FLAGS ?= -count=1 -p 2 -timeout 20m

lint: $(BIN)/staticcheck
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^hack/tools/')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...

# test: everything CI runs: lint, then every package's tests (unit, package
# and e2e tests against real etcd processes and a real MinIO), then the demo,
# so the README's first command is proven too.
test: tools lint
	$(GO) test $(GO_TEST_FLAGS) ./...
	$(MAKE) --no-print-directory demo > /dev/null

# fuzz: a short run of every fuzz target (go test -fuzz takes one at a time).
FUZZTIME ?= 20s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

# demo: a throwaway etcd with Kubernetes-like data, a local directory
# target, then backup, list, verify and prune with the real kdr binary.
demo: build $(ETCD_BINS)
	hack/demo.sh

# bench: kdr against the standard tools on the same generated database.
BENCH_SIZE_MIB ?= 1024
BENCH_REPS ?= 3
BENCH_FLAGS ?=
bench: build tools
	$(GO) run ./hack/bench -size-mib $(BENCH_SIZE_MIB) -reps $(BENCH_REPS) $(BENCH_FLAGS)

clean:
	rm -rf $(BIN)
