package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

// The bench compares PostgreSQL with bbolt's fsync, so a durable cluster
// must sync; the tests' cluster skips it.
func TestStartClusterDurable(t *testing.T) {
	durable, err := StartCluster(Options{Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := durable.Stop(); err != nil {
			t.Error(err)
		}
	})
	dsn, err := durable.CreateDatabase("durable")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, dsn, want string
	}{
		{name: "durable", dsn: dsn, want: "on"},
		{name: "for tests", dsn: Database(t), want: "off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := pgx.Connect(context.Background(), c.dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			var fsync string
			if err := conn.QueryRow(context.Background(), "SHOW fsync").Scan(&fsync); err != nil {
				t.Fatal(err)
			}
			if fsync != c.want {
				t.Errorf("fsync = %s, want %s", fsync, c.want)
			}
		})
	}
}
