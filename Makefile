# vpcnet build, test, benchmark and demo. Everything runs as root on Debian 12.
SHELL := /bin/bash
export PATH := $(HOME)/go/bin:/usr/local/go/bin:$(PATH)

GO      ?= go
BIN     := $(CURDIR)/bin
PKG     := github.com/vpcnet/vpcnet
VERSION := $(shell cat VERSION)
GIT_SHA := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY   := $(shell if [ -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then echo true; else echo false; fi)
LDFLAGS := -s -w \
	-X $(PKG)/internal/version.version=$(VERSION) \
	-X $(PKG)/internal/version.gitShortHash=$(GIT_SHA) \
	-X $(PKG)/internal/version.dirty=$(DIRTY)

# Go test flags; override for a narrower run, e.g. make test TESTFLAGS='-run Bridge'.
TESTFLAGS ?=
TESTPKGS  ?= ./...
# Where scripts/install-kubernetes.sh keeps the Kubernetes binaries (outside the repository).
K8S_CACHE ?= /var/cache/vpcnet/kubernetes-v1.36.1

.PHONY: all build deps kubernetes test bench demo demo-kubernetes clean fmt vet proto

all: build

## build: static binaries (CGO_ENABLED=0) stamped with VERSION and the git SHA, into bin/
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## deps: install what the tests, benchmarks and demo need (Debian packages, Go tools)
deps:
	@scripts/install-deps.sh

## kubernetes: build etcd and the Kubernetes binaries of the pinned release once per machine (cached in K8S_CACHE)
kubernetes:
	@VPCNET_K8S_CACHE=$(K8S_CACHE) scripts/install-kubernetes.sh

## test: the one test command: installs what is missing, builds, runs every test with -race
test: deps kubernetes build vet
	VPCNET_K8S_BIN=$(K8S_CACHE)/bin VPCNET_BIN_DIR=$(BIN) $(GO) test -race -count=1 -timeout 80m $(TESTFLAGS) $(TESTPKGS)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

## bench: benchmarks side by side with the reference plugins; prints tables
bench: deps kubernetes build
	VPCNET_BIN_DIR=$(BIN) VPCNET_K8S_BIN=$(K8S_CACHE)/bin scripts/bench.sh

## demo: the main job, run on a local VPC, cleaned up afterwards
demo: deps build
	VPCNET_BIN_DIR=$(BIN) scripts/demo.sh

## demo-kubernetes: a cluster on a local VPC, vpcnetd as a DaemonSet, pods across nodes; cleaned up afterwards
demo-kubernetes: deps kubernetes build
	VPCNET_BIN_DIR=$(BIN) VPCNET_K8S_BIN=$(K8S_CACHE)/bin scripts/demo-kubernetes.sh

## proto: regenerate the agent API's Go code (needs protoc: apt-get install protobuf-compiler)
proto:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler" >&2; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	cd internal/node/nodeapi && protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative nodeapi.proto

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
