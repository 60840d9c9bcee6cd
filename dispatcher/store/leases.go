package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// Partition leases: each replica holds one PostgreSQL session that takes a
// session advisory lock per partition it owns, LISTENs for wake-ups, and
// runs a query every interval. The replicas alive are the sessions named
// "hookrelay/..." in pg_stat_activity; partitions are assigned among them
// by rendezvous hashing, so a replica joining or leaving moves only its
// share. A replica killed outright drops its session, PostgreSQL frees its
// locks at once, and the others take its partitions at their next tick.
//
// A replica that cannot reach the database stops delivering (Lose) once its
// last good tick is 3 intervals old; PostgreSQL ends a session silent for
// sessionTimeout, later, so that no two replicas deliver a partition at once.

const (
	// leaseLockKey is the first key of the partitions' advisory locks
	// ("hook" in ASCII); the partition is the second.
	leaseLockKey int32 = 0x686f6f6b
	// wakeChannel is the NOTIFY channel of wake-ups.
	wakeChannel = "hookrelay_wake"
	// replicaPrefix starts the application_name of lease sessions.
	replicaPrefix = "hookrelay/"
	// sessionTimeout ends a lease session PostgreSQL has not heard from.
	sessionTimeout = 10 * time.Second
	// maxWakePayload keeps a NOTIFY under PostgreSQL's 8000-byte limit.
	maxWakePayload = 7000
)

// LeaseHandler is told what the replica owns: the delivery engine.
type LeaseHandler interface {
	// Acquire starts delivering the partitions, now locked for this replica.
	Acquire(ctx context.Context, partitions []int) error
	// Release stops delivering the partitions and returns once the attempts
	// in flight ended and their records are stored; they are unlocked after.
	Release(partitions []int)
	// Lose stops delivering every partition at once: the session is gone.
	Lose()
	// Wake hands over pending deliveries another replica stored.
	Wake(deliveries []Delivery)
}

// Leases holds this replica's partitions. Run it; Wake sends wake-ups.
type Leases struct {
	pool     *Postgres
	config   *pgx.ConnConfig
	name     string
	interval time.Duration
	handler  LeaseHandler
	log      logr.Logger

	// lastTick is the time of the last good tick (UnixNano), 0 when none.
	lastTick atomic.Int64
	wakes    chan []Delivery

	// held is owned by Run: partitions locked, and those being released.
	held, releasing map[int]bool
	released        chan []int
	releaseWait     sync.WaitGroup
}

// LeaseOptions configure Leases.
type LeaseOptions struct {
	// Replica names this replica (a pod name); it must be unique among
	// the live replicas and at most 50 bytes.
	Replica string
	// Interval is how often the session ticks; 1s when zero.
	Interval time.Duration
	Handler  LeaseHandler
	Log      logr.Logger
}

// Leases returns the lease holder of this replica.
func (p *Postgres) Leases(opts LeaseOptions) (*Leases, error) {
	if opts.Replica == "" || len(opts.Replica) > 50 {
		return nil, fmt.Errorf("store: replica name %q: want 1 to 50 bytes", opts.Replica)
	}
	if opts.Interval == 0 {
		opts.Interval = time.Second
	}
	config := p.pool.Config().ConnConfig.Copy()
	config.RuntimeParams["application_name"] = replicaPrefix + opts.Replica
	config.RuntimeParams["idle_session_timeout"] = strconv.Itoa(int(sessionTimeout / time.Millisecond))
	// A wait for a wake-up ends on a deadline without closing the session
	// (the default sends the server a cancel request every time).
	config.BuildContextWatcherHandler = func(conn *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: conn.Conn()}
	}
	return &Leases{
		pool: p, config: config, name: replicaPrefix + opts.Replica, interval: opts.Interval, handler: opts.Handler, log: opts.Log.WithValues("replica", opts.Replica),
		wakes: make(chan []Delivery, 1024), held: map[int]bool{}, releasing: map[int]bool{}, released: make(chan []int, Partitions),
	}, nil
}

// Connected reports whether the session ticked lately: the replica owns
// what it holds and can store what it accepts.
func (l *Leases) Connected() bool {
	last := l.lastTick.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < 3*l.interval
}

// Run holds the session until ctx ends, opening it again when it breaks.
func (l *Leases) Run(ctx context.Context) {
	go l.sendWakes(ctx)
	for {
		err := l.session(ctx)
		l.lastTick.Store(0)
		l.releaseWait.Wait()
		if len(l.held) > 0 {
			l.handler.Lose()
			l.held, l.releasing = map[int]bool{}, map[int]bool{}
		}
		// The closed session freed every lock, released or not.
		for drained := false; !drained; {
			select {
			case <-l.released:
			default:
				drained = true
			}
		}
		if ctx.Err() != nil {
			return
		}
		l.log.Error(err, "the PostgreSQL session holding this replica's partitions broke; delivering none until it is back")
		select {
		case <-ctx.Done():
			return
		case <-time.After(l.interval):
		}
	}
}

// session opens the lease session and ticks until it fails.
func (l *Leases) session(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, l.config)
	if err != nil {
		return err
	}
	defer func() {
		if err := conn.Close(context.Background()); err != nil {
			l.log.Error(err, "closing the lease session")
		}
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+wakeChannel); err != nil {
		return err
	}
	for {
		tickCtx, cancel := context.WithTimeout(ctx, 2*l.interval)
		err := l.tick(ctx, tickCtx, conn)
		cancel()
		if err != nil {
			return err
		}
		l.lastTick.Store(time.Now().UnixNano())
		if err := l.listen(ctx, conn, time.Now().Add(l.interval)); err != nil {
			return err
		}
	}
}

// listen hands wake-ups to the handler until next.
func (l *Leases) listen(ctx context.Context, conn *pgx.Conn, next time.Time) error {
	for {
		waitCtx, cancel := context.WithDeadline(ctx, next)
		notification, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && waitCtx.Err() != nil:
			return nil // time to tick
		case err != nil:
			return err
		}
		var deliveries []Delivery
		if err := json.Unmarshal([]byte(notification.Payload), &deliveries); err != nil {
			l.log.Error(err, "reading a wake-up; the owner's next re-read finds its deliveries")
			continue
		}
		l.handler.Wake(deliveries)
	}
}

// tick reads the live replicas, gives up the partitions assigned to others
// and takes the free ones assigned to this replica.
func (l *Leases) tick(ctx, tickCtx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(tickCtx, `SELECT DISTINCT application_name FROM pg_stat_activity
		WHERE datname = current_database() AND starts_with(application_name, $1)`, replicaPrefix)
	if err != nil {
		return err
	}
	replicas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	var unlock []int
	for done := true; done; {
		select {
		case partitions := <-l.released:
			unlock = append(unlock, partitions...)
		default:
			done = false
		}
	}
	if len(unlock) > 0 {
		if _, err := conn.Exec(tickCtx, "SELECT pg_advisory_unlock($1, p) FROM unnest($2::int[]) AS p", leaseLockKey, unlock); err != nil {
			return err
		}
		for _, partition := range unlock {
			delete(l.held, partition)
			delete(l.releasing, partition)
		}
		l.log.Info("released partitions", "partitions", unlock)
	}
	var give, take []int
	for partition, owner := range Assign(replicas, l.name) {
		switch {
		case owner && !l.held[partition]:
			take = append(take, partition)
		case !owner && l.held[partition] && !l.releasing[partition]:
			give = append(give, partition)
		}
	}
	if len(give) > 0 {
		// The engine lets the attempts in flight end, which may take longer
		// than a tick: the session keeps ticking meanwhile.
		for _, partition := range give {
			l.releasing[partition] = true
		}
		l.releaseWait.Go(func() {
			l.handler.Release(give)
			l.released <- give
		})
	}
	if len(take) == 0 {
		return nil
	}
	var locked []int32
	if err := conn.QueryRow(tickCtx, "SELECT coalesce(array_agg(p), '{}') FROM unnest($2::int[]) AS p WHERE pg_try_advisory_lock($1, p)",
		leaseLockKey, take).Scan(&locked); err != nil {
		return err
	}
	if len(locked) == 0 {
		return nil // their owner has not let them go yet
	}
	partitions := make([]int, len(locked))
	for i, partition := range locked {
		partitions[i] = int(partition)
		l.held[int(partition)] = true
	}
	l.log.Info("took partitions", "partitions", partitions, "replicas", len(replicas))
	return l.handler.Acquire(ctx, partitions)
}

// Assign says which partitions go to the replica named me among the live
// ones: each to the replica with the highest hash of its name and the
// partition (rendezvous hashing).
func Assign(replicas []string, me string) [Partitions]bool {
	var mine [Partitions]bool
	for partition := range Partitions {
		best, bestScore := "", uint64(0)
		for _, replica := range replicas {
			// A cryptographic hash spreads names that differ in their last
			// bytes (pod names do) evenly.
			sum := sha256.Sum256([]byte(replica + "#" + strconv.Itoa(partition)))
			if score := binary.BigEndian.Uint64(sum[:8]); best == "" || score > bestScore || (score == bestScore && replica < best) {
				best, bestScore = replica, score
			}
		}
		mine[partition] = best == me || len(replicas) == 0
	}
	return mine
}

// Wake tells the owners of the deliveries' partitions that they are
// stored. It does not wait: the wake-ups go out together, a few at a time.
func (l *Leases) Wake(_ context.Context, deliveries []Delivery) error {
	select {
	case l.wakes <- deliveries:
		return nil
	default:
		return errors.New("store: too many wake-ups waiting to be sent")
	}
}

// sendWakes sends the waiting wake-ups, as few NOTIFYs as their size allows.
func (l *Leases) sendWakes(ctx context.Context) {
	for {
		var waiting []Delivery
		select {
		case <-ctx.Done():
			return
		case deliveries := <-l.wakes:
			waiting = deliveries
		}
		for more := true; more; {
			select {
			case deliveries := <-l.wakes:
				waiting = append(waiting, deliveries...)
			default:
				more = false
			}
		}
		if err := l.notify(ctx, waiting); err != nil {
			l.log.Error(err, "sending wake-ups; the owners' next re-read finds the deliveries", "count", len(waiting))
		}
	}
}

// notify sends deliveries in NOTIFYs of one transaction, which need not
// wait for the disk: a wake-up lost in a crash is found by a re-read.
func (l *Leases) notify(ctx context.Context, deliveries []Delivery) error {
	var payloads []string
	var current []byte
	for _, delivery := range deliveries {
		one, err := json.Marshal(delivery)
		if err != nil {
			return err
		}
		if len(current) > 0 && len(current)+len(one)+2 > maxWakePayload {
			payloads, current = append(payloads, string(current)+"]"), nil
		}
		if len(current) == 0 {
			current = append(current, '[')
		} else {
			current = append(current, ',')
		}
		current = append(current, one...)
	}
	if len(current) > 0 {
		payloads = append(payloads, string(current)+"]")
	}
	return pgx.BeginFunc(ctx, l.pool.pool, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		batch.Queue("SET LOCAL synchronous_commit TO off")
		for _, payload := range payloads {
			batch.Queue("SELECT pg_notify($1, $2)", wakeChannel, payload)
		}
		return tx.SendBatch(ctx, batch).Close()
	})
}
