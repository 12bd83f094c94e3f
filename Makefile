# kdr: build, test, demo and benchmarks. Every tool the tests need is built
# from the Go module proxy into ./bin (hack/tools pins the versions) or
# installed from Debian; nothing else is downloaded.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)
export KDR_BIN_DIR := $(BIN)
# RELEASE (the file VERSION) is the image tag that deploy/base names; `make
# set-version V=vX.Y.Z` changes both. A build from anything but the commit
# tagged RELEASE says so in its version: RELEASE-dev+<commit>[.dirty].
RELEASE := $(shell cat VERSION)
REVISION := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo .dirty)
VERSION ?= $(if $(filter $(RELEASE),$(shell git tag --points-at HEAD 2>/dev/null)),$(RELEASE),$(RELEASE)-dev+$(REVISION))
LDFLAGS := -s -w -X github.com/kdr-io/kdr/internal/version.Version=$(VERSION)
IMAGE := ghcr.io/kdr-io/kdr
# The image's one timestamp is the commit's, so that a commit always gives
# the same image.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

ETCD_BINS := $(BIN)/etcd $(BIN)/etcdctl $(BIN)/etcdutl
# kube-apiserver, kubeadm and kubectl for the kubeadm host tests
# (internal/testenv/kube.go); kubelet, kube-controller-manager,
# kube-scheduler and kube-proxy for the real node the agent's Deployment
# runs on (internal/testenv/node.go). The version is stamped as Kubernetes'
# own build does (hack/lib/version.sh); unstamped binaries say
# v0.0.0-master and kubeadm cannot name the version it deploys.
KUBE_CMDS := kube-apiserver kubeadm kubectl kubelet kube-controller-manager kube-scheduler kube-proxy
KUBE_BINS := $(addprefix $(BIN)/,$(KUBE_CMDS))
KUBE_VERSION := $(shell awk '$$1 == "require" && $$2 == "k8s.io/kubernetes" { print $$3 }' hack/tools/kube/go.mod)
KUBE_VERSION_PARTS := $(subst ., ,$(patsubst v%,%,$(KUBE_VERSION)))
KUBE_LDFLAGS := $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
  -X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=$(word 1,$(KUBE_VERSION_PARTS)) \
  -X $(p).gitMinor=$(word 2,$(KUBE_VERSION_PARTS)) -X $(p).gitTreeState=clean)
TOOLS := $(ETCD_BINS) $(BIN)/minio $(BIN)/staticcheck $(KUBE_BINS) $(BIN)/promtool $(BIN)/pause

.PHONY: all build image set-version tools debian-tools test lint unit fuzz bench demo clean

all: build

build: $(BIN)/kdr

$(BIN)/kdr: $(shell find . -name '*.go' -not -path './hack/*' -not -path './bin/*') config/example.yaml go.mod go.sum VERSION
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/kdr

# image: the agent's image as an OCI archive (bin/kdr-image.tar), built
# without a daemon or registry; the Dockerfile gives docker the same
# content. `ctr -n k8s.io images import bin/kdr-image.tar` loads it.
# It is written every time (a few seconds): its labels name the commit, which
# no file prerequisite tracks.
image: $(BIN)/kdr
	@test -f /etc/ssl/certs/ca-certificates.crt || { echo "no CA bundle: apt-get install ca-certificates"; exit 1; }
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./hack/image -name $(IMAGE):$(RELEASE) -out $(BIN)/kdr-image.tar \
	  -file /usr/local/bin/kdr=$(BIN)/kdr:0755 \
	  -file /etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt:0644 \
	  -entrypoint kdr \
	  -label org.opencontainers.image.title=kdr \
	  -label org.opencontainers.image.version=$(VERSION) \
	  -label org.opencontainers.image.revision=$(REVISION) \
	  -label org.opencontainers.image.source=https://github.com/kdr-io/kdr

# set-version: the release the image is tagged with, in VERSION and in the
# tag deploy/base and deploy/README.md name.
set-version:
	@case "$(V)" in v[0-9]*.[0-9]*.[0-9]*) ;; *) echo "usage: make set-version V=vX.Y.Z"; exit 1 ;; esac
	echo $(V) > VERSION
	sed -i 's/^\(    newTag: \).*/\1$(V)/' deploy/base/kustomization.yaml
	sed -i 's/^\(       newTag: \)v[0-9][^ ]*/\1$(V)/' deploy/README.md

tools: $(TOOLS) debian-tools

# pause: the sandbox process of the test node's pods, in an image built
# there (internal/testenv/node.go).
$(BIN)/pause: hack/pause/main.go
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./hack/pause

$(ETCD_BINS) &: hack/tools/etcd/go.mod hack/tools/etcd/go.sum hack/tools/etcd/cmd/etcd/main.go
	cd hack/tools/etcd && export CGO_ENABLED=0 && $(GO) build -o $(BIN)/etcd ./cmd/etcd \
	  && $(GO) build -o $(BIN)/etcdctl go.etcd.io/etcd/etcdctl/v3 \
	  && $(GO) build -o $(BIN)/etcdutl go.etcd.io/etcd/etcdutl/v3

$(KUBE_BINS) &: hack/tools/kube/go.mod hack/tools/kube/go.sum
	cd hack/tools/kube && for c in $(KUBE_CMDS); do \
	  CGO_ENABLED=0 $(GO) build -ldflags '$(KUBE_LDFLAGS)' -o $(BIN)/$$c k8s.io/kubernetes/cmd/$$c || exit 1; done

$(BIN)/minio: hack/tools/minio/go.mod hack/tools/minio/go.sum
	cd hack/tools/minio && $(GO) build -o $@ github.com/minio/minio

$(BIN)/staticcheck: hack/tools/lint/go.mod hack/tools/lint/go.sum
	cd hack/tools/lint && $(GO) build -o $@ honnef.co/go/tools/cmd/staticcheck

# promtool checks and unit-tests the alerting rules in deploy/monitoring.
$(BIN)/promtool: hack/tools/prometheus/go.mod hack/tools/prometheus/go.sum
	cd hack/tools/prometheus && $(GO) build -o $@ github.com/prometheus/prometheus/cmd/promtool

# Debian packages: age and zstd for the break-glass tests, ssh-keygen to
# verify signatures as an operator without kdr does, rsync for the
# runbook's restore-files commands, pdftotext to read rendered PDFs; for the
# real node the agent's Deployment runs on (internal/testenv/node.go):
# containerd with runc, the bridge CNI plugins, iptables and conntrack for
# kube-proxy. Installed only when missing.
DEBIAN_NEEDS := age:age zstd:zstd pdftotext:poppler-utils ssh-keygen:openssh-client rsync:rsync \
  containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
  iptables:iptables conntrack:conntrack
debian-tools:
	@missing=""; for c in $(DEBIAN_NEEDS); do \
	  cmd=$${c%%:*}; case $$cmd in /*) [ -x $$cmd ] ;; *) command -v $$cmd >/dev/null ;; esac \
	    || missing="$$missing $${c##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# staticcheck and vet read the module graph once; -p keeps the 2-core
# machines that run this responsive.
GO_TEST_FLAGS ?= -count=1 -p 2 -timeout 30m

lint: $(BIN)/staticcheck
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^hack/tools/')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...

# test: everything CI runs: lint, then every package's tests (unit, package
# and e2e tests against real etcd processes, a real MinIO and a real node),
# then the demo, so the README's first command is proven too. testsum prints
# what plain `go test` would, a summary, and fails when any e2e test did not
# run and pass (a rename, a build tag or a skip would otherwise go unseen).
test: tools image lint
	set -o pipefail; $(GO) test $(GO_TEST_FLAGS) -json ./... | $(GO) run ./hack/testsum -require-all ./e2e -require-all ./e2e/node
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
