package ingest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// APIGroup is the group of the resources that RBAC grants on the API:
// events (create: publish) and deliveries (get, list: read the log; update:
// retry and replay).
const APIGroup = "hookrelay.dev"

// TokenHeader carries the bearer token when a request comes through the API
// server's service proxy, which keeps the Authorization header for itself.
const TokenHeader = "X-Hookrelay-Authorization"

// KubeAuth authenticates bearer tokens with TokenReview and authorizes with
// SubjectAccessReview, remembering each answer for TTL.
type KubeAuth struct {
	Client kubernetes.Interface
	// Audiences the token must be for; empty means the API server's.
	Audiences []string
	TTL       time.Duration
	Now       func() time.Time

	mu        sync.Mutex
	users     map[[32]byte]cachedUser
	decisions map[string]cachedDecision
}

type cachedUser struct {
	user      authenticationv1.UserInfo
	reason    string // why the token was refused, when it was
	expiresAt time.Time
}

type cachedDecision struct {
	allowed   bool
	reason    string
	expiresAt time.Time
}

// denial is an answer other than "go ahead".
type denial struct {
	status  int
	message string
}

// check authenticates the request's token and authorizes verb on resource
// in namespace.
func (a *KubeAuth) check(ctx context.Context, r *http.Request, namespace, verb, resource string) *denial {
	token := bearerToken(r)
	if token == "" {
		return &denial{http.StatusUnauthorized, "a Kubernetes bearer token is required (Authorization: Bearer <token>), such as a ServiceAccount token from `kubectl create token`"}
	}
	user, reason, err := a.authenticate(ctx, token)
	if err != nil {
		return &denial{http.StatusServiceUnavailable, "could not check the token with the API server: " + err.Error()}
	}
	if reason != "" {
		return &denial{http.StatusUnauthorized, "the token was refused: " + reason}
	}
	allowed, reason, err := a.authorize(ctx, user, namespace, verb, resource)
	if err != nil {
		return &denial{http.StatusServiceUnavailable, "could not check access with the API server: " + err.Error()}
	}
	if !allowed {
		message := fmt.Sprintf("%s may not %s %s.%s in namespace %q", user.Username, verb, resource, APIGroup, namespace)
		if reason != "" {
			message += ": " + reason
		}
		return &denial{http.StatusForbidden, message}
	}
	return nil
}

func bearerToken(r *http.Request) string {
	for _, header := range []string{TokenHeader, "Authorization"} {
		if token, ok := strings.CutPrefix(r.Header.Get(header), "Bearer "); ok && strings.TrimSpace(token) != "" {
			return strings.TrimSpace(token)
		}
	}
	return ""
}

func (a *KubeAuth) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *KubeAuth) authenticate(ctx context.Context, token string) (authenticationv1.UserInfo, string, error) {
	key := sha256.Sum256([]byte(token))
	a.mu.Lock()
	cached, ok := a.users[key]
	a.mu.Unlock()
	if ok && a.now().Before(cached.expiresAt) {
		return cached.user, cached.reason, nil
	}
	review, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: a.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, "", err
	}
	cached = cachedUser{user: review.Status.User, expiresAt: a.now().Add(a.TTL)}
	if !review.Status.Authenticated {
		cached.reason = review.Status.Error
		if cached.reason == "" {
			cached.reason = "not authenticated"
		}
	}
	a.mu.Lock()
	if a.users == nil || len(a.users) > 10_000 {
		a.users = map[[32]byte]cachedUser{}
	}
	a.users[key] = cached
	a.mu.Unlock()
	return cached.user, cached.reason, nil
}

func (a *KubeAuth) authorize(ctx context.Context, user authenticationv1.UserInfo, namespace, verb, resource string) (bool, string, error) {
	key := strings.Join([]string{user.UID, user.Username, strings.Join(user.Groups, ","), namespace, verb, resource}, "\x00")
	a.mu.Lock()
	cached, ok := a.decisions[key]
	a.mu.Unlock()
	if ok && a.now().Before(cached.expiresAt) {
		return cached.allowed, cached.reason, nil
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	review, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: verb, Group: APIGroup, Resource: resource},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	cached = cachedDecision{allowed: review.Status.Allowed, reason: review.Status.Reason, expiresAt: a.now().Add(a.TTL)}
	a.mu.Lock()
	if a.decisions == nil || len(a.decisions) > 10_000 {
		a.decisions = map[string]cachedDecision{}
	}
	a.decisions[key] = cached
	a.mu.Unlock()
	return cached.allowed, cached.reason, nil
}
