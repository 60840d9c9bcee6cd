package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/lru"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// APIGroup is the group of the resources that RBAC grants on the API:
// events (create: publish) and deliveries (get, list: read the log; update:
// retry and replay).
const APIGroup = "hookrelay.dev"

// Bounds of the answers KubeAuth remembers. Refused tokens have a cache of
// their own, so that a flood of bogus tokens never evicts a valid one.
const (
	userCacheSize     = 10_000
	refusedCacheSize  = 10_000
	decisionCacheSize = 10_000
	limiterCacheSize  = 10_000
)

// Defaults of the per-address limit on failed authentications.
const (
	DefaultFailureRate  = rate.Limit(5)
	DefaultFailureBurst = 20
)

// KubeAuth authenticates bearer tokens with TokenReview and authorizes with
// SubjectAccessReview, remembering each answer for TTL in bounded LRU
// caches, and limits failed authentications per client address.
type KubeAuth struct {
	Client kubernetes.Interface
	// Audiences the token must be for; empty means the API server's.
	Audiences []string
	TTL       time.Duration
	// FailureRate and FailureBurst bound the failed authentications (no
	// token, or a refused one) per client address; past them the address
	// gets 429 without a TokenReview. Zero means the defaults.
	FailureRate  rate.Limit
	FailureBurst int
	Now          func() time.Time

	init      sync.Once
	users     *lru.Cache // sha256(token) → cachedUser, authenticated
	refused   *lru.Cache // sha256(token) → cachedUser, refused
	decisions *lru.Cache // decisionKey → cachedDecision
	limiters  *lru.Cache // client address → *rate.Limiter
}

func (a *KubeAuth) caches() {
	a.init.Do(func() {
		a.users, a.refused = lru.New(userCacheSize), lru.New(refusedCacheSize)
		a.decisions, a.limiters = lru.New(decisionCacheSize), lru.New(limiterCacheSize)
		if a.FailureRate == 0 {
			a.FailureRate = DefaultFailureRate
		}
		if a.FailureBurst == 0 {
			a.FailureBurst = DefaultFailureBurst
		}
	})
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
	// retryAfter is set on 429.
	retryAfter time.Duration
}

// check authenticates the request's token and authorizes verb on resource
// in namespace.
func (a *KubeAuth) check(ctx context.Context, r *http.Request, namespace, verb, resource string) *denial {
	a.caches()
	address := clientAddress(r)
	token := bearerToken(r)
	// A token already known valid costs no TokenReview, so the limit does
	// not apply: a client sharing its address (SNAT, hostNetwork, the API
	// server's proxy) with one that fails keeps going.
	if wait := a.failureBackoff(address); wait > 0 && !a.knownValid(token) {
		return &denial{status: http.StatusTooManyRequests, retryAfter: wait,
			message: fmt.Sprintf("too many failed authentications from %s; try again in %s", address, wait)}
	}
	if token == "" {
		a.failed(address)
		return &denial{status: http.StatusUnauthorized,
			message: "a Kubernetes bearer token is required (Authorization: Bearer <token>), such as a ServiceAccount token from `kubectl create token`"}
	}
	user, reason, err := a.authenticate(ctx, token)
	if err != nil {
		return &denial{status: http.StatusServiceUnavailable, message: "could not check the token with the API server: " + err.Error()}
	}
	if reason != "" {
		a.failed(address)
		return &denial{status: http.StatusUnauthorized, message: "the token was refused: " + reason}
	}
	allowed, reason, err := a.authorize(ctx, user, namespace, verb, resource)
	if err != nil {
		return &denial{status: http.StatusServiceUnavailable, message: "could not check access with the API server: " + err.Error()}
	}
	if !allowed {
		message := fmt.Sprintf("%s may not %s %s.%s in namespace %q", user.Username, verb, resource, APIGroup, namespace)
		if reason != "" {
			message += ": " + reason
		}
		return &denial{status: http.StatusForbidden, message: message}
	}
	return nil
}

// clientAddress is the peer's IP: forwarding headers are the client's to
// write, so they do not pick the bucket.
func clientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// failureBackoff says how long an address must wait before its next
// authentication, zero when it may go ahead.
func (a *KubeAuth) failureBackoff(address string) time.Duration {
	value, ok := a.limiters.Get(address)
	if !ok {
		return 0
	}
	limiter := value.(*rate.Limiter)
	now := a.now()
	tokens := limiter.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	wait := time.Duration((1 - tokens) / float64(limiter.Limit()) * float64(time.Second))
	return max(wait.Round(time.Second), time.Second)
}

// failed spends one of the address's failed authentications.
func (a *KubeAuth) failed(address string) {
	var limiter *rate.Limiter
	if value, ok := a.limiters.Get(address); ok {
		limiter = value.(*rate.Limiter)
	} else {
		limiter = rate.NewLimiter(a.FailureRate, a.FailureBurst)
		a.limiters.Add(address, limiter)
	}
	limiter.AllowN(a.now(), 1)
}

func bearerToken(r *http.Request) string {
	for _, header := range []string{dispatcherapi.TokenHeader, "Authorization"} {
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

// knownValid reports whether the token is in the accepted-tokens cache and
// not expired.
func (a *KubeAuth) knownValid(token string) bool {
	if token == "" {
		return false
	}
	value, ok := a.users.Get(sha256.Sum256([]byte(token)))
	return ok && a.now().Before(value.(cachedUser).expiresAt)
}

func (a *KubeAuth) authenticate(ctx context.Context, token string) (authenticationv1.UserInfo, string, error) {
	a.caches()
	key := sha256.Sum256([]byte(token))
	for _, cache := range []*lru.Cache{a.users, a.refused} {
		if value, ok := cache.Get(key); ok {
			if cached := value.(cachedUser); a.now().Before(cached.expiresAt) {
				return cached.user, cached.reason, nil
			}
			cache.Remove(key)
		}
	}
	review, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: a.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, "", err
	}
	cached := cachedUser{user: review.Status.User, expiresAt: a.now().Add(a.TTL)}
	if !review.Status.Authenticated {
		cached.reason = review.Status.Error
		if cached.reason == "" {
			cached.reason = "not authenticated"
		}
		a.refused.Add(key, cached)
		return cached.user, cached.reason, nil
	}
	a.users.Add(key, cached)
	return cached.user, cached.reason, nil
}

func (a *KubeAuth) authorize(ctx context.Context, user authenticationv1.UserInfo, namespace, verb, resource string) (bool, string, error) {
	a.caches()
	key := decisionKey(user, namespace, verb, resource)
	if value, ok := a.decisions.Get(key); ok {
		if cached := value.(cachedDecision); a.now().Before(cached.expiresAt) {
			return cached.allowed, cached.reason, nil
		}
		a.decisions.Remove(key)
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
	cached := cachedDecision{allowed: review.Status.Allowed, reason: review.Status.Reason, expiresAt: a.now().Add(a.TTL)}
	a.decisions.Add(key, cached)
	return cached.allowed, cached.reason, nil
}

// decisionKey holds everything the SubjectAccessReview is asked about,
// extras included (authorizers may decide on them), JSON-encoded so that no
// value can pose as another field.
func decisionKey(user authenticationv1.UserInfo, namespace, verb, resource string) string {
	key, _ := json.Marshal([]any{user.UID, user.Username, user.Groups, user.Extra, namespace, verb, resource})
	return string(key)
}
