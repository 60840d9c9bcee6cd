package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the PostgreSQL schema, one numbered file per version
// (0001_initial.sql), applied in order and never edited once released.
//
//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock key under which replicas starting
// together migrate one at a time ("hookrela" in ASCII, as a number).
const migrationLock int64 = 0x686f6f6b72656c61

// migration is one numbered schema file.
type migration struct {
	version int
	name    string
	sql     string
}

// readMigrations lists the embedded migrations by version, refusing a file
// without a version or two files of one version.
func readMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	out := make([]migration, 0, len(entries))
	for _, entry := range entries { // sorted by name, so by zero-padded version
		prefix, _, _ := strings.Cut(entry.Name(), "_")
		version, err := strconv.Atoi(prefix)
		if err != nil || version <= 0 {
			return nil, fmt.Errorf("migration %s: the name must start with a positive version number and an underscore", entry.Name())
		}
		if len(out) > 0 && out[len(out)-1].version >= version {
			return nil, fmt.Errorf("migration %s: version %d does not follow %s", entry.Name(), version, out[len(out)-1].name)
		}
		sql, err := fs.ReadFile(migrations, path.Join("migrations", entry.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: version, name: entry.Name(), sql: string(sql)})
	}
	return out, nil
}

// migrate applies the migrations the database has not seen, each in a
// transaction with its version recorded, under a session advisory lock so
// that replicas starting at once do not race.
func migrate(ctx context.Context, pool *pgxpool.Pool) (err error) {
	pending, err := readMigrations()
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() {
		// Unlocked even when ctx is done; a session that cannot unlock is
		// closed, which releases the lock with it.
		if _, unlockErr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLock); unlockErr != nil {
			err = errors.Join(err, fmt.Errorf("releasing the migration lock: %w", unlockErr), conn.Conn().Close(context.WithoutCancel(ctx)))
		}
	}()
	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	if err != nil {
		return fmt.Errorf("creating the migrations table: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	// A database migrated by a newer binary is left as it is: migrations
	// only add, so that replicas of both versions run during a rollout.
	for _, m := range pending {
		if m.version <= current {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("applying migration %s: %w", m.name, err)
		}
	}
	return nil
}
