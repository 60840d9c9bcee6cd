// Package pgtest runs a throwaway PostgreSQL cluster for a test binary:
// initdb into a temporary folder, the server listening on a Unix socket in
// that folder only (no TCP port to collide on), one database per test.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	dsn := pgtest.Database(t)
//
// Outside tests (the bench), StartCluster starts a cluster of one's own.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// superuser is the cluster's superuser, whom the tests connect as.
const superuser = "pgtest"

var (
	startOnce sync.Once
	shared    *Cluster
	startErr  error
	databases atomic.Int64
)

// Main runs the tests, then stops the cluster if one of them started it,
// and exits. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		code = max(code, 1)
	}
	os.Exit(code)
}

// Stop stops the cluster if a test started it, for a TestMain that does
// more than Main around m.Run.
func Stop() error {
	if shared == nil {
		return nil
	}
	return shared.Stop()
}

// Database creates an empty database in the test binary's cluster, which
// the first call starts, and returns its DSN. Missing server binaries fail
// the test: PostgreSQL is part of what `make test` sets up.
func Database(t testing.TB) string {
	t.Helper()
	startOnce.Do(func() { shared, startErr = StartCluster(Options{}) })
	if startErr != nil {
		t.Fatalf("pgtest: %v", startErr)
	}
	dsn, err := shared.CreateDatabase(fmt.Sprintf("test_%d", databases.Add(1)))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// Options of StartCluster.
type Options struct {
	// Durable keeps fsync and full-page writes on, as a production server
	// has them: for measuring, not for tests, which a thrown-away cluster
	// spares the wait.
	Durable bool
}

// StartCluster initialises and starts a cluster in a new temporary folder;
// Stop stops it and removes the folder.
func StartCluster(options Options) (*Cluster, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	// Short: the socket's path must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin}
	if err := c.init(options); err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	return c, nil
}

// CreateDatabase creates an empty database and returns its DSN.
func (c *Cluster) CreateDatabase(name string) (string, error) {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, c.dsn("postgres"))
	if err != nil {
		return "", fmt.Errorf("connecting to the cluster: %w", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("creating database %s: %w", name, err)
	}
	return c.dsn(name), nil
}

// Cluster is a running server and the folder that holds it.
type Cluster struct {
	dir, bin string
	// owner runs the server binaries, which refuse to run as root.
	owner *syscall.Credential
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) dsn(database string) string {
	return fmt.Sprintf("host=%s user=%s dbname=%s sslmode=disable", c.dir, superuser, database)
}

// run runs a server binary as the cluster's owner, its output in a file of
// the folder (not a pipe: the server pg_ctl starts would hold a pipe open).
func (c *Cluster) run(name string, args ...string) error {
	logPath := filepath.Join(c.dir, name+".log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Stdout, cmd.Stderr = log, log
	if c.owner != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.owner}
	}
	if err := cmd.Run(); err != nil {
		output, readErr := os.ReadFile(logPath)
		return errors.Join(fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, output), readErr)
	}
	return nil
}

func (c *Cluster) init(options Options) error {
	// Others may reach the socket; the data folder stays the owner's alone.
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		owner, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("initdb refuses to run as root, and there is no postgres user to run it as: %w", err)
		}
		uid, uidErr := strconv.ParseUint(owner.Uid, 10, 32)
		gid, gidErr := strconv.ParseUint(owner.Gid, 10, 32)
		if err := errors.Join(uidErr, gidErr); err != nil {
			return err
		}
		c.owner = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(c.dir, int(uid), int(gid)); err != nil {
			return err
		}
	}
	initdb := []string{"--pgdata=" + c.data(), "--username=" + superuser, "--auth=trust", "--encoding=UTF8", "--locale=C"}
	config := fmt.Sprintf("\nlisten_addresses = ''\nunix_socket_directories = '%s'\nmax_connections = 300\n", c.dir)
	if !options.Durable {
		// No fsync: the cluster is thrown away, and the tests wait less.
		initdb = append(initdb, "--no-sync")
		config += "fsync = off\nfull_page_writes = off\n"
	}
	if err := c.run("initdb", initdb...); err != nil {
		return err
	}
	conf, err := os.OpenFile(filepath.Join(c.data(), "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := conf.WriteString(config); err != nil {
		return errors.Join(err, conf.Close())
	}
	if err := conf.Close(); err != nil {
		return err
	}
	return c.run("pg_ctl", "start", "--wait", "--pgdata="+c.data(), "--log="+filepath.Join(c.dir, "postgres.log"))
}

// Stop stops the server and removes its folder.
func (c *Cluster) Stop() error {
	if err := c.run("pg_ctl", "stop", "--wait", "--mode=fast", "--pgdata="+c.data()); err != nil {
		return fmt.Errorf("stopping the cluster in %s: %w", c.dir, err)
	}
	return os.RemoveAll(c.dir)
}

// findBinaries returns the folder holding initdb and pg_ctl: where
// pg_config says, where Debian's postgresql package puts them (the newest
// version first), or on the PATH.
func findBinaries() (string, error) {
	var candidates []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	debian, err := filepath.Glob("/usr/lib/postgresql/*/bin")
	if err != nil {
		return "", err
	}
	slices.SortFunc(debian, func(a, b string) int { return versionOf(b) - versionOf(a) })
	candidates = append(candidates, debian...)
	if initdb, err := exec.LookPath("initdb"); err == nil {
		candidates = append(candidates, filepath.Dir(initdb))
	}
	for _, dir := range candidates {
		if isFile(filepath.Join(dir, "initdb")) && isFile(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found in `pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH: " +
		"`make test` installs them (its postgres target runs apt-get install postgresql), or run `make postgres`")
}

// versionOf reads the major version of /usr/lib/postgresql/<version>/bin.
func versionOf(bin string) int {
	version, err := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	if err != nil {
		return 0 // not a version: tried last
	}
	return version
}

func isFile(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir()
}
