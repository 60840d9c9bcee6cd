//go:build tools

// Package tools pins helm's command in go.mod; hack/helm.sh builds it.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
