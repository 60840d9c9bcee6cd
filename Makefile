# Hookrelay: `make dev` runs it locally, `make test` passes the tests.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN := $(CURDIR)/bin
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/hookrelay
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN := $(LOCALBIN)/controller-gen
GO_TEST_FLAGS ?= -race -count=1
FUZZTIME ?= 30s
# Fuzz targets as package:Name; `make fuzz` runs each for $(FUZZTIME).
FUZZ_TARGETS ?= \
	./dispatcher/ingest:FuzzDecodeJSONEvent \
	./dispatcher/ingest:FuzzDecodeCloudEventBinary \
	./dispatcher/ingest:FuzzDecodeCloudEventStructured \
	./internal/routes:FuzzDecodeRoutes \
	./dispatcher/delivery:FuzzEgressCheck \
	./dispatcher/signing:FuzzVerifyPrefixed \
	./dispatcher/signing:FuzzVerifyStandard
IMG ?= ghcr.io/hookrelay/hookrelay:dev

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-14s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs, RBAC and the webhook configuration from the markers in api/, controllers/ and internal/webhook/.
	$(CONTROLLER_GEN) rbac:roleName=hookrelay-manager crd webhook paths="./api/..." paths="./controllers/..." paths="./internal/webhook/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac output:webhook:artifacts:config=config/webhook

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy methods, the apply configurations in api/applyconfiguration, and the README's table of reasons from api/v1alpha1/conditions.go.
	@# Removed first, so that a type taken out of the API leaves no stale file.
	rm -rf api/applyconfiguration
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" applyconfiguration:headerFile="hack/boilerplate.go.txt" paths="./api/..."
	go run ./hack/reasons

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: verify
verify: manifests generate vet ## Fail if generated files, go.mod or formatting are stale.
	go mod tidy
	@if [ -n "$$(git status --porcelain -- api config controllers go.mod go.sum README.md)" ] || [ -n "$$(gofmt -l $$(git ls-files '*.go'))" ]; then \
		git status --porcelain -- api config controllers go.mod go.sum README.md; gofmt -l $$(git ls-files '*.go'); \
		echo "verify: generated files, go.mod or formatting are stale; run 'make manifests generate fmt' and 'go mod tidy', and commit" >&2; exit 1; fi
	@echo "verify: generated files and formatting are up to date"

.PHONY: build
build: generate binaries ## Build the binaries into bin/.

.PHONY: binaries
binaries:
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/ ./cmd/...

.PHONY: run
run: manifests generate ## Run the manager against the cluster in $$KUBECONFIG (plain http:// endpoints allowed).
	go run ./cmd/manager --allow-insecure-endpoints --routes-namespace=$${ROUTES_NAMESPACE:-hookrelay-system}

DEV_DIR ?= .dev
DEV_FLAGS ?=

.PHONY: dev
dev: binaries controlplane ## Run Hookrelay locally: control plane, CRDs, manager, dispatcher, sample receiver and samples (state in $(DEV_DIR)/).
	go build -o $(LOCALBIN)/localup ./hack/localup
	$(LOCALBIN)/localup --data-dir=$(DEV_DIR) --bin-dir=$(LOCALBIN) $(DEV_FLAGS)

.PHONY: controlplane
controlplane: ## Build (or reuse from the cache) kube-apiserver and etcd, linked into bin/controlplane.
	@hack/controlplane.sh $(LOCALBIN) >/dev/null

.PHONY: test
test: manifests generate controlplane ## Run every test against the built control plane, then each fuzz target for $(FUZZTIME).
	KUBEBUILDER_ASSETS=$(LOCALBIN)/controlplane go test $(GO_TEST_FLAGS) ./...
	$(MAKE) fuzz

.PHONY: fuzz
fuzz: ## Run each fuzz target in FUZZ_TARGETS for $(FUZZTIME) (seed corpora in the packages' testdata/fuzz).
	@FUZZTIME=$(FUZZTIME) hack/fuzz.sh $(FUZZ_TARGETS)

.PHONY: deploy
deploy: ## Install Hookrelay on the cluster in $$KUBECONFIG (config/default).
	kubectl apply -k config/default

.PHONY: undeploy
undeploy: ## Remove Hookrelay from the cluster in $$KUBECONFIG.
	kubectl delete -k config/default --ignore-not-found

.PHONY: bench
bench: build controlplane ## Measure delivery throughput and latency against a bare relay (prints figures).
	KUBEBUILDER_ASSETS=$(LOCALBIN)/controlplane go run ./test/bench --dispatcher=$(LOCALBIN)/dispatcher $(BENCH_FLAGS)

##@ Images

PLATFORMS ?= linux/amd64 linux/arm64

.PHONY: images
images: ## Build the image with Docker; without a Docker engine, check that the static binaries build for each platform.
	@if docker info >/dev/null 2>&1; then \
		docker build -t $(IMG) .; \
	else \
		echo "images: no Docker engine here; checking static builds for $(PLATFORMS)"; \
		for platform in $(PLATFORMS); do \
			CGO_ENABLED=0 GOOS=$${platform%/*} GOARCH=$${platform#*/} go build -trimpath -o $(CURDIR)/bin/$${platform}/ ./cmd/... && echo "images: $$platform ok"; \
		done; \
	fi

##@ Tools

# Tools are cached by version in the user cache folder and linked into bin/.
$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	@if [ ! -x "$(CACHE_DIR)/tools/controller-gen-$(CONTROLLER_TOOLS_VERSION)/controller-gen" ]; then \
		echo "tools: installing controller-gen $(CONTROLLER_TOOLS_VERSION)"; \
		GOBIN="$(CACHE_DIR)/tools/controller-gen-$(CONTROLLER_TOOLS_VERSION)" go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION); fi
	ln -sf "$(CACHE_DIR)/tools/controller-gen-$(CONTROLLER_TOOLS_VERSION)/controller-gen" $@
