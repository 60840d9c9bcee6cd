# Hookrelay: `make dev` runs it locally, `make test` passes the tests.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN := $(CURDIR)/bin
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/hookrelay
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN := $(LOCALBIN)/controller-gen
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT := $(LOCALBIN)/golangci-lint
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
# The release's version: the image tag of `make images` and `make deploy`,
# config/default's tag (the install test checks it) and the chart's appVersion.
VERSION := $(shell cat VERSION)
IMG ?= ghcr.io/hookrelay/hookrelay:$(VERSION)
HELM := $(LOCALBIN)/helm

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_-]+:.*?##/ { gsub(/\$$\$$/, "$$", $$2); printf "  %-14s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs, RBAC and the webhook configuration from the markers in api/, controllers/, internal/webhook/ and internal/servingcert/.
	$(CONTROLLER_GEN) rbac:roleName=hookrelay-manager crd webhook paths="./api/..." paths="./controllers/..." paths="./internal/webhook/..." paths="./internal/servingcert/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac output:webhook:artifacts:config=config/webhook
	@# The chart test's API server knows prometheus-operator's ServiceMonitor and
	@# PrometheusRule, made from the Go types of the module in go.mod.
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(CONTROLLER_GEN) crd:maxDescLen=0 paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 output:crd:dir="$$tmp" && \
		mkdir -p test/chart/testdata/crds && \
		cp "$$tmp"/monitoring.coreos.com_servicemonitors.yaml "$$tmp"/monitoring.coreos.com_prometheusrules.yaml test/chart/testdata/crds/

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
verify: manifests generate vet layout ## Fail if generated files, go.mod, formatting or the package layout are stale.
	go mod tidy
	@for module in $(HACK_MODULES); do (cd $$module && go mod tidy) || exit 1; done
	@if [ -n "$$(git status --porcelain -- api config controllers dist test/chart/testdata go.mod go.sum README.md $(HACK_MODULES))" ] || [ -n "$$(gofmt -l $$(git ls-files '*.go'))" ]; then \
		git status --porcelain -- api config controllers dist test/chart/testdata go.mod go.sum README.md $(HACK_MODULES); gofmt -l $$(git ls-files '*.go'); \
		echo "verify: generated files, the chart, go.mod or formatting are stale; run 'make manifests generate chart fmt' and 'go mod tidy', and commit" >&2; exit 1; fi
	@echo "verify: generated files and formatting are up to date"

# The project's declared top-level folders; a Go package anywhere else fails `make layout`.
TOP_LEVEL_DIRS := api controllers config dispatcher hack cmd internal pkg test

.PHONY: layout
layout: ## Fail if a Go package lives outside the declared top-level folders.
	@module=$$(go list -m); packages=$$(go list ./...); \
	stray=$$(grep -Ev "^$$module/($(subst $(eval) ,|,$(TOP_LEVEL_DIRS)))(/|$$)" <<<"$$packages") || [ $$? -eq 1 ]; \
	if [ -n "$$stray" ]; then echo "$$stray"; \
		echo "layout: packages outside the declared top-level folders ($(TOP_LEVEL_DIRS)); move them, or declare the folder in the Makefile and README" >&2; exit 1; fi

# Modules of their own under hack/ that hold Go code of the project's (not
# the control plane's build modules): linted, tested and tidied as the main one.
HACK_MODULES := hack/dashboard

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint with .golangci.yml (the main module and HACK_MODULES).
	$(GOLANGCI_LINT) run
	@for module in $(HACK_MODULES); do (cd $$module && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml) || exit 1; done

.PHONY: lint-fix
lint-fix: $(GOLANGCI_LINT) ## Run golangci-lint and apply the fixes it can make.
	$(GOLANGCI_LINT) run --fix

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

# STORE=postgres runs a local PostgreSQL and two dispatcher replicas on it.
.PHONY: dev
dev: binaries controlplane $(if $(filter postgres,$(STORE)),postgres) ## Run Hookrelay locally: control plane, CRDs, manager, dispatcher, sample receiver and samples (state in DEV_DIR, default .dev/); STORE=postgres: two replicas on PostgreSQL.
	go build -o $(LOCALBIN)/localup ./hack/localup
	$(LOCALBIN)/localup --data-dir=$(DEV_DIR) --bin-dir=$(LOCALBIN) $(if $(STORE),--store=$(STORE)) $(DEV_FLAGS)

.PHONY: chart
chart: ## Generate the Helm chart's templates in dist/chart from config/ (and its appVersion from VERSION).
	go run ./hack/chart --config=config --chart=dist/chart --version-file=VERSION

.PHONY: controlplane
controlplane: ## Build (or reuse from the cache) kube-apiserver and etcd, linked into bin/controlplane.
	@hack/controlplane.sh $(LOCALBIN) >/dev/null

# Unit and integration tests: every package except the process-level suites under test/.
TEST_PACKAGES = $$(go list ./... | grep -Ev '/test/(e2e|dev)(/|$$)')

.PHONY: test
test: manifests generate controlplane postgres helm ## Run unit and integration tests against the real API server and a throwaway PostgreSQL, then each fuzz target for FUZZTIME.
	KUBEBUILDER_ASSETS=$(LOCALBIN)/controlplane HELM=$(HELM) go test $(GO_TEST_FLAGS) $(TEST_PACKAGES)
	@for module in $(HACK_MODULES); do (cd $$module && go test $(GO_TEST_FLAGS) ./...) || exit 1; done
	$(MAKE) fuzz

.PHONY: test-e2e
test-e2e: manifests generate controlplane helm ## Run the end-to-end tests: manager, real dispatcher binary and kubectl plugin against the real API server.
	KUBEBUILDER_ASSETS=$(LOCALBIN)/controlplane HELM=$(HELM) go test $(GO_TEST_FLAGS) ./test/e2e/...

.PHONY: test-dev
# The binaries are built first: a cold build takes minutes, which the
# test's wait for `make dev` to be ready does not allow for.
test-dev: manifests generate controlplane binaries ## Run the `make dev` test: the local stack comes up from scratch and delivers the samples.
	KUBEBUILDER_ASSETS=$(LOCALBIN)/controlplane go test $(GO_TEST_FLAGS) ./test/dev/...

# The tests start their own PostgreSQL cluster (internal/pgtest) from the server
# binaries, which Debian's postgresql package installs under /usr/lib/postgresql;
# apt-get update runs only when the package lists do not know it yet.
.PHONY: postgres
postgres: ## Install PostgreSQL's server binaries (apt-get install postgresql) unless initdb is found.
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		&& ! { command -v pg_config >/dev/null && [ -x "$$(pg_config --bindir)/initdb" ]; }; then \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		echo "postgres: installing PostgreSQL's server binaries (apt-get install postgresql)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$sudo apt-get install -y -qq postgresql >/dev/null || { $$sudo apt-get update -qq && $$sudo apt-get install -y -qq postgresql >/dev/null; }; fi

.PHONY: fuzz
fuzz: ## Run each fuzz target in FUZZ_TARGETS for FUZZTIME, default 30s (seed corpora in the packages' testdata/fuzz).
	@FUZZTIME=$(FUZZTIME) hack/fuzz.sh $(FUZZ_TARGETS)

# DEPLOY picks the install under config/ (default, postgres, production).
DEPLOY ?= default
DEPLOY_DIR := $(LOCALBIN)/deploy

# An overlay in bin/deploy sets IMG on config/$(DEPLOY), so that `make deploy`
# runs the image `make images` built.
.PHONY: deploy-overlay
deploy-overlay:
	@mkdir -p $(DEPLOY_DIR)
	@img='$(IMG)'; case "$${img##*/}" in *:*) ;; *) echo "deploy: IMG=$$img has no tag, such as :$(VERSION)" >&2; exit 1;; esac; \
	printf '%s\n' "# Written by make deploy: config/$(DEPLOY) with the image $$img." \
		'resources:' '- ../../config/$(DEPLOY)' 'images:' '- name: ghcr.io/hookrelay/hookrelay' \
		"  newName: $${img%:*}" "  newTag: $${img##*:}" >$(DEPLOY_DIR)/kustomization.yaml

.PHONY: deploy
deploy: deploy-overlay ## Install Hookrelay on the cluster in $$KUBECONFIG: config/$$DEPLOY (default: default) with the image IMG.
	kubectl apply -k $(DEPLOY_DIR)

.PHONY: undeploy
undeploy: deploy-overlay ## Remove Hookrelay from the cluster in $$KUBECONFIG.
	kubectl delete -k $(DEPLOY_DIR) --ignore-not-found

# The bench measures the dispatcher on pebble and on bbolt, one dispatcher
# each, in one run; STORE=pebble,bolt,postgres (a comma-separated list) picks
# the stores, postgres adding one and three replicas on a PostgreSQL of its
# own. PROFILE=1 takes CPU and allocation profiles of the dispatcher during
# its runs and prints where the time goes (the same as BENCH_FLAGS=--profile).
.PHONY: bench
bench: build controlplane $(if $(findstring postgres,$(STORE)),postgres) ## Measure delivery throughput and latency against a bare relay (prints figures): pebble and bbolt; STORE=pebble,bolt,postgres picks the stores, PROFILE=1 profiles the dispatcher.
	KUBEBUILDER_ASSETS=$(LOCALBIN)/controlplane go run ./test/bench --dispatcher=$(LOCALBIN)/dispatcher $(if $(STORE),--store=$(STORE)) $(if $(PROFILE),--profile) \
		$(if $(METRICS_OUT),--metrics-out=$(METRICS_OUT)) $(BENCH_FLAGS)

# The dashboard's picture: a bench run scraping /metrics into a new folder,
# then hack/dashboard drawing config/grafana/hookrelay.json from the scrapes.
# DASHBOARD_SAMPLES=DIR draws from the scrapes of an earlier run instead
# (make bench METRICS_OUT=DIR).
DASHBOARD_PNG ?= docs/dashboard.png

.PHONY: dashboard-png
dashboard-png: ## Run the bench with its /metrics scraped every second, and draw the Grafana dashboard from the samples into DASHBOARD_PNG (docs/dashboard.png); DASHBOARD_SAMPLES=DIR reuses a run's scrapes.
	@samples="$(DASHBOARD_SAMPLES)"; \
	if [ -z "$$samples" ]; then \
		samples=$$(mktemp -d "$${TMPDIR:-/tmp}/hookrelay-bench-metrics-XXXXXX"); \
		$(MAKE) bench METRICS_OUT="$$samples"; \
	fi; \
	mkdir -p "$(dir $(abspath $(DASHBOARD_PNG)))"; \
	cd hack/dashboard && go run . --dashboard=$(CURDIR)/config/grafana/hookrelay.json --samples="$$(cd $(CURDIR) && realpath "$$samples")" --out=$(abspath $(DASHBOARD_PNG))

# SCALE_FLAGS=--endpoints=1000 makes a quick run; the default is the issue's 10,000.
.PHONY: scale
scale: build controlplane ## Measure the control plane at size: 10,000 endpoints and subscriptions created at once (time to Ready, bytes written to the shards, RSS, apply→live, restart); prints figures.
	KUBEBUILDER_ASSETS=$(LOCALBIN)/controlplane go run ./test/scale --manager=$(LOCALBIN)/manager --dispatcher=$(LOCALBIN)/dispatcher $(SCALE_FLAGS)

# SCALE_FLAGS="--endpoints=1000 --deliveries=100000 --held=10000" makes a quick
# run; --prefilled=DIR keeps the filled store for the next run. STORE picks the
# embedded engine (the dispatcher's --store).
.PHONY: scale-dispatcher
scale-dispatcher: build controlplane ## Measure one dispatcher at size: 10,000 endpoints, 1 million stored deliveries (time to ready, RSS, release rate of 100,000 held deliveries); prints figures.
	KUBEBUILDER_ASSETS=$(LOCALBIN)/controlplane go run ./test/scale/dispatcher --dispatcher=$(LOCALBIN)/dispatcher $(if $(STORE),--store=$(STORE)) $(SCALE_FLAGS)

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
.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Build (or reuse from the cache) controller-gen at CONTROLLER_TOOLS_VERSION, linked into bin/.

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT) ## Build (or reuse from the cache) golangci-lint at GOLANGCI_LINT_VERSION, linked into bin/.

.PHONY: helm
helm: ## Build (or reuse from the cache) helm at the version in hack/helm/go.mod, linked into bin/.
	@hack/helm.sh $(LOCALBIN)

$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	@if [ ! -x "$(CACHE_DIR)/tools/controller-gen-$(CONTROLLER_TOOLS_VERSION)/controller-gen" ]; then \
		echo "tools: installing controller-gen $(CONTROLLER_TOOLS_VERSION)"; \
		GOBIN="$(CACHE_DIR)/tools/controller-gen-$(CONTROLLER_TOOLS_VERSION)" go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION); fi
	ln -sf "$(CACHE_DIR)/tools/controller-gen-$(CONTROLLER_TOOLS_VERSION)/controller-gen" $@

$(GOLANGCI_LINT):
	@mkdir -p $(LOCALBIN)
	@if [ ! -x "$(CACHE_DIR)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint" ]; then \
		echo "tools: installing golangci-lint $(GOLANGCI_LINT_VERSION)"; \
		GOBIN="$(CACHE_DIR)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)" go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); fi
	ln -sf "$(CACHE_DIR)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint" $@
