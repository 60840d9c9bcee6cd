package routes

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hookrelay/hookrelay/internal/whsec"
)

// tenThousandEndpoints builds the routes and keys of 10,000 endpoints, each
// with a transform and two subscriptions, the way the controllers do.
func tenThousandEndpoints(t *testing.T) (routeEntries, keyEntries map[string][]byte) {
	t.Helper()
	routeEntries, keyEntries = map[string][]byte{}, map[string][]byte{}
	for i := range 10_000 {
		namespace, name := fmt.Sprintf("tenant-%04d", i/10), fmt.Sprintf("endpoint-%d", i)
		keys := []Key{{Secret: whsec.Encode(make([]byte, 33))}}
		endpoint := Endpoint{
			Namespace: namespace, Name: name, UID: "6f1c2b4e-0d0e-4c53-9a55-5b1f0d8e7a10", Generation: 3,
			URL:                fmt.Sprintf("https://hooks.customer-%d.example.com/palenca/webhooks", i),
			Timeout:            metav1.Duration{Duration: 30 * time.Second},
			RetrySchedule:      []metav1.Duration{{Duration: time.Minute}, {Duration: 5 * time.Minute}, {Duration: 30 * time.Minute}},
			SuccessStatusCodes: []int32{200, 201}, AutoDisableAfter: 10, MaxInFlight: 10,
			Transform:   `{"webhook_url": endpoint.url, "data": {"user_id": event.data.user_id, "webhook_action": event.type}}`,
			KeysVersion: KeysVersion(keys),
			Subscriptions: []Subscription{
				{Name: "logins", Generation: 1, EventTypes: []string{"login.*"}, Filter: `event.data.platform == "uber"`},
				{Name: "everything", Generation: 1, EventTypes: []string{"*"}},
			},
		}
		var err error
		if routeEntries[EntryKey(namespace, name)], err = EncodeEndpoint(endpoint); err != nil {
			t.Fatal(err)
		}
		if keyEntries[EntryKey(namespace, name)], err = EncodeKeys(KeysEntry{Keys: keys}); err != nil {
			t.Fatal(err)
		}
	}
	return routeEntries, keyEntries
}

func TestTenThousandEndpointsFitUnderTheDefaultLimit(t *testing.T) {
	const limit = 512 << 10
	routeEntries, keyEntries := tenThousandEndpoints(t)

	routeShards, err := Pack(routeEntries, limit, 0, ConfigMapEntrySize)
	if err != nil {
		t.Fatal(err)
	}
	keyShards, err := Pack(keyEntries, limit, 0, SecretEntrySize)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for i, shard := range routeShards {
		data := map[string]string{}
		for k, v := range shard {
			data[k] = string(v)
		}
		assertUnder(t, limit, &corev1.ConfigMap{ObjectMeta: shardMeta(RoutesShardPrefix, i, shard)}, data)
		seen += len(shard)
	}
	for i, shard := range keyShards {
		assertUnder(t, limit, &corev1.Secret{ObjectMeta: shardMeta(KeysShardPrefix, i, shard), Data: shard}, nil)
	}
	if seen != len(routeEntries) {
		t.Fatalf("shards hold %d endpoints, want %d", seen, len(routeEntries))
	}
	t.Logf("10,000 endpoints: %d routes ConfigMaps, %d keys Secrets", len(routeShards), len(keyShards))
}

func TestPackIsDeterministic(t *testing.T) {
	routeEntries, _ := tenThousandEndpoints(t)
	first, err := Pack(routeEntries, 256<<10, 0, ConfigMapEntrySize)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Pack(routeEntries, 256<<10, 0, ConfigMapEntrySize)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, second) {
		t.Fatal("the same entries packed into different shards")
	}
}

func TestPackRefusesAnEntryOverTheLimit(t *testing.T) {
	_, err := Pack(map[string][]byte{"ns.huge": make([]byte, 8<<10)}, 4<<10, 0, ConfigMapEntrySize)
	if err == nil || !strings.Contains(err.Error(), `"ns.huge"`) {
		t.Fatalf("Pack error = %v, want one naming the entry", err)
	}
}

// shardMeta is a shard's metadata with managedFields as the API server
// records them: one field per data key.
func shardMeta(prefix string, index int, shard map[string][]byte) metav1.ObjectMeta {
	fields := map[string]any{}
	for k := range shard {
		fields["f:"+k] = map[string]any{}
	}
	raw, _ := json.Marshal(map[string]any{"f:data": fields})
	return metav1.ObjectMeta{
		Name: ShardName(prefix, index), Namespace: "hookrelay-system", ResourceVersion: "123456789",
		UID: "6f1c2b4e-0d0e-4c53-9a55-5b1f0d8e7a10", CreationTimestamp: metav1.Now(),
		Labels:        map[string]string{LabelRoutes: "true", "app.kubernetes.io/managed-by": "hookrelay"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(string(raw))}},
	}
}

func assertUnder(t *testing.T, limit int, obj interface{ GetName() string }, configMapData map[string]string) {
	t.Helper()
	if configMap, ok := obj.(*corev1.ConfigMap); ok {
		configMap.Data = configMapData
	}
	encoded, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if len(encoded) > limit {
		t.Fatalf("%s is %d bytes, over the %d-byte limit", obj.GetName(), len(encoded), limit)
	}
}
