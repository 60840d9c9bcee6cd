// Package pgcluster runs a PostgreSQL cluster of one's own from the server
// binaries (initdb, pg_ctl): in a new temporary folder, thrown away on Stop
// (the tests, through internal/pgtest, and the bench), or in a folder kept
// between runs (`make dev STORE=postgres`). The server listens on a Unix
// socket in that folder only: no TCP port to collide on.
package pgcluster

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
	"syscall"

	"github.com/jackc/pgx/v5"
)

// superuser is the cluster's superuser, whom its users connect as.
const superuser = "pgtest"

// maxSocketPath is the longest path a Unix socket may have on Linux.
const maxSocketPath = 107

// Options of Start.
type Options struct {
	// Durable keeps fsync and full-page writes on, as a production server
	// has them: for measuring and for state one keeps, not for tests, which
	// a thrown-away cluster spares the wait.
	Durable bool
	// Dir keeps the cluster in this folder: initialised on the first Start,
	// started again by the next ones, kept by Stop. Empty, Start makes a
	// temporary folder that Stop removes.
	Dir string
}

// Cluster is a running server and the folder that holds it.
type Cluster struct {
	dir, bin string
	// kept: Stop leaves the folder (Options.Dir).
	kept bool
	// owner runs the server binaries, which refuse to run as root.
	owner *syscall.Credential
}

// Start initialises the cluster unless its folder already holds one, and
// starts it unless it is running already (left by a run that was killed).
func Start(options Options) (*Cluster, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: options.Dir, bin: bin, kept: options.Dir != ""}
	if c.kept {
		if c.dir, err = filepath.Abs(c.dir); err == nil {
			err = os.MkdirAll(c.dir, 0o755)
		}
	} else {
		// Short: the socket's path must fit in 107 bytes.
		c.dir, err = os.MkdirTemp("", "pgtest-")
	}
	if err != nil {
		return nil, err
	}
	if err := c.start(options); err != nil {
		if !c.kept {
			err = errors.Join(err, os.RemoveAll(c.dir))
		}
		return nil, err
	}
	return c, nil
}

// CreateDatabase creates an empty database and returns its DSN.
func (c *Cluster) CreateDatabase(name string) (string, error) {
	return c.database(name, false)
}

// EnsureDatabase creates the database unless it exists, and returns its DSN.
func (c *Cluster) EnsureDatabase(name string) (string, error) {
	return c.database(name, true)
}

func (c *Cluster) database(name string, existingIsFine bool) (string, error) {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("connecting to the cluster: %w", err)
	}
	defer admin.Close(ctx)
	if existingIsFine {
		var exists bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
			return "", fmt.Errorf("looking for database %s: %w", name, err)
		}
		if exists {
			return c.DSN(name), nil
		}
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("creating database %s: %w", name, err)
	}
	return c.DSN(name), nil
}

// DSN of a database of the cluster.
func (c *Cluster) DSN(database string) string {
	return fmt.Sprintf("host=%s user=%s dbname=%s sslmode=disable", c.dir, superuser, database)
}

// Dir is the cluster's folder, which also holds its socket and logs.
func (c *Cluster) Dir() string { return c.dir }

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

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

func (c *Cluster) start(options Options) error {
	if socket := filepath.Join(c.dir, ".s.PGSQL.5432"); len(socket) > maxSocketPath {
		return fmt.Errorf("the socket's path %s is longer than %d bytes: use a shorter folder", socket, maxSocketPath)
	}
	// Others may reach the socket; the data folder stays the owner's alone.
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return err
	}
	if err := c.setOwner(); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(c.data(), "PG_VERSION")); err == nil {
		// pg_ctl status exits 0 while a server runs on the folder.
		if c.run("pg_ctl", "status", "--pgdata="+c.data()) == nil {
			return nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	} else if err := c.init(options); err != nil {
		return err
	}
	return c.run("pg_ctl", "start", "--wait", "--pgdata="+c.data(), "--log="+filepath.Join(c.dir, "postgres.log"))
}

// setOwner makes the postgres user the cluster's owner when running as root.
func (c *Cluster) setOwner() error {
	if os.Geteuid() != 0 {
		return nil
	}
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
	// The postgres user must pass through every folder above its own.
	for dir := filepath.Dir(c.dir); ; dir = filepath.Dir(dir) {
		info, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("PostgreSQL runs as user postgres, which cannot enter %s (mode %s): chmod o+x it, or choose a folder it can reach", dir, info.Mode().Perm())
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

func (c *Cluster) init(options Options) error {
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
	return conf.Close()
}

// Stop stops the server, and removes its folder unless it is kept
// (Options.Dir).
func (c *Cluster) Stop() error {
	if err := c.run("pg_ctl", "stop", "--wait", "--mode=fast", "--pgdata="+c.data()); err != nil {
		return fmt.Errorf("stopping the cluster in %s: %w", c.dir, err)
	}
	if c.kept {
		return nil
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
