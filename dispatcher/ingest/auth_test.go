package ingest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

// fakeReviews is a clientset whose TokenReview authenticates only
// "valid-token" and whose SubjectAccessReview allows everyone, counting
// the calls of each.
func fakeReviews(tokenReviews, accessReviews *atomic.Int64) *fake.Clientset {
	clientset := fake.NewClientset()
	clientset.PrependReactor("create", "tokenreviews", func(action clienttesting.Action) (bool, runtime.Object, error) {
		tokenReviews.Add(1)
		review := action.(clienttesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		if review.Spec.Token == "valid-token" {
			review.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "system:serviceaccount:ns:publisher"}}
		} else {
			review.Status = authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}
		}
		return true, review, nil
	})
	clientset.PrependReactor("create", "subjectaccessreviews", func(action clienttesting.Action) (bool, runtime.Object, error) {
		accessReviews.Add(1)
		review := action.(clienttesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		review.Status.Allowed = true
		return true, review, nil
	})
	return clientset
}

func TestBogusTokensDoNotEvictValidOnes(t *testing.T) {
	var tokenReviews, accessReviews atomic.Int64
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	auth := &KubeAuth{Client: fakeReviews(&tokenReviews, &accessReviews), TTL: time.Minute, Now: func() time.Time { return now }}
	ctx := context.Background()
	if _, reason, err := auth.authenticate(ctx, "valid-token"); err != nil || reason != "" {
		t.Fatalf("valid token: reason %q, error %v", reason, err)
	}
	for i := range 10_000 {
		if _, reason, err := auth.authenticate(ctx, fmt.Sprintf("bogus-%d", i)); err != nil || reason == "" {
			t.Fatalf("bogus token %d: reason %q, error %v", i, reason, err)
		}
	}
	before := tokenReviews.Load()
	if _, reason, err := auth.authenticate(ctx, "valid-token"); err != nil || reason != "" {
		t.Fatalf("valid token: reason %q, error %v", reason, err)
	}
	if calls := tokenReviews.Load() - before; calls != 0 {
		t.Fatalf("the valid token took %d more TokenReviews after 10,000 bogus ones: its cache entry was evicted", calls)
	}
	if calls := tokenReviews.Load(); calls != 10_001 {
		t.Fatalf("%d TokenReviews, want 10,001", calls)
	}
}

func TestAccessDecisionsAreKeyedOnExtras(t *testing.T) {
	var tokenReviews, accessReviews atomic.Int64
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	auth := &KubeAuth{Client: fakeReviews(&tokenReviews, &accessReviews), TTL: time.Minute, Now: func() time.Time { return now }}
	ctx := context.Background()
	user := authenticationv1.UserInfo{Username: "alice", Groups: []string{"team"}}
	withScope := user
	withScope.Extra = map[string]authenticationv1.ExtraValue{"scopes": {"read-only"}}
	for _, u := range []authenticationv1.UserInfo{user, withScope, user, withScope} {
		if _, _, err := auth.authorize(ctx, u, "ns", "create", "events"); err != nil {
			t.Fatal(err)
		}
	}
	if calls := accessReviews.Load(); calls != 2 {
		t.Fatalf("%d SubjectAccessReviews for one user with and without extras, want 2 (one per distinct extras)", calls)
	}
}

// limitedAuth checks publishes with a KubeAuth on fakeReviews, counting
// TokenReviews, that allows an address three failed authentications and
// then one a second by the clock *now. The returned function checks one
// publish from address with the bearer token.
func limitedAuth(tokenReviews *atomic.Int64, now *time.Time) func(address, token string) *denial {
	var accessReviews atomic.Int64
	auth := &KubeAuth{Client: fakeReviews(tokenReviews, &accessReviews), TTL: time.Minute, FailureRate: 1, FailureBurst: 3,
		Now: func() time.Time { return *now }}
	return func(address, token string) *denial {
		r := httptest.NewRequest(http.MethodPost, "/v1/namespaces/ns/events", nil)
		r.RemoteAddr = address
		r.Header.Set("Authorization", "Bearer "+token)
		return auth.check(context.Background(), r, "ns", "create", "events")
	}
}

func TestFailedAuthenticationsAreLimitedPerAddress(t *testing.T) {
	var tokenReviews atomic.Int64
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	request := limitedAuth(&tokenReviews, &now)
	for i := range 3 {
		if denied := request("192.0.2.1:1000", fmt.Sprintf("bogus-%d", i)); denied == nil || denied.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %+v, want 401", i, denied)
		}
	}
	reviews := tokenReviews.Load()
	denied := request("192.0.2.1:1001", "bogus-next")
	if denied == nil || denied.status != http.StatusTooManyRequests || denied.retryAfter != time.Second {
		t.Fatalf("after the burst: %+v, want 429 with a retry after 1s", denied)
	}
	if tokenReviews.Load() != reviews {
		t.Fatal("a limited address still caused a TokenReview")
	}
	// Even a valid token waits: the limit is on the address.
	if denied := request("192.0.2.1:1002", "valid-token"); denied == nil || denied.status != http.StatusTooManyRequests {
		t.Fatalf("valid token from a limited address: %+v, want 429", denied)
	}
	// Other addresses are not affected.
	if denied := request("192.0.2.2:1000", "valid-token"); denied != nil {
		t.Fatalf("another address: %+v, want allowed", denied)
	}
	// One second later, one more try.
	now = now.Add(time.Second)
	if denied := request("192.0.2.1:1003", "valid-token"); denied != nil {
		t.Fatalf("after a second: %+v, want allowed", denied)
	}
}

// TestKnownValidTokenIsNotLimited: a token already accepted goes ahead from
// an address whose failed-authentication budget a neighbour spent; bogus
// and not-yet-known tokens from it still wait.
func TestKnownValidTokenIsNotLimited(t *testing.T) {
	var tokenReviews atomic.Int64
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	request := limitedAuth(&tokenReviews, &now)
	if denied := request("192.0.2.1:1000", "valid-token"); denied != nil {
		t.Fatalf("valid token: %+v, want allowed", denied)
	}
	for i := range 3 {
		if denied := request("192.0.2.1:2000", fmt.Sprintf("bogus-%d", i)); denied == nil || denied.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %+v, want 401", i, denied)
		}
	}
	if denied := request("192.0.2.1:1001", "valid-token"); denied != nil {
		t.Fatalf("known valid token from an address a neighbour limited: %+v, want allowed", denied)
	}
	if denied := request("192.0.2.1:2001", "bogus-0"); denied == nil || denied.status != http.StatusTooManyRequests {
		t.Fatalf("refused token from the limited address: %+v, want 429", denied)
	}
	if denied := request("192.0.2.1:2002", "bogus-next"); denied == nil || denied.status != http.StatusTooManyRequests {
		t.Fatalf("unknown token from the limited address: %+v, want 429", denied)
	}
}

// TestTooManyFailuresAnswer429 checks the HTTP answer: 429 with Retry-After.
func TestTooManyFailuresAnswer429(t *testing.T) {
	var tokenReviews, accessReviews atomic.Int64
	auth := &KubeAuth{Client: fakeReviews(&tokenReviews, &accessReviews), TTL: time.Minute, FailureRate: 0.5, FailureBurst: 1}
	mux := http.NewServeMux()
	(&Handler{Publisher: &recordingPublisher{}, Auth: auth, MaxBody: DefaultMaxBody}).Register(mux)
	var codes []int
	var retryAfter string
	for range 2 {
		response := httptest.NewRecorder()
		mux.ServeHTTP(response, httptest.NewRequest(http.MethodPost, "/v1/namespaces/ns/events", nil))
		codes = append(codes, response.Code)
		retryAfter = response.Header().Get("Retry-After")
	}
	if codes[0] != http.StatusUnauthorized || codes[1] != http.StatusTooManyRequests || retryAfter != "2" {
		t.Fatalf("answers %v, Retry-After %q; want 401 then 429 with Retry-After 2", codes, retryAfter)
	}
}
