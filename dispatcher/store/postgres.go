package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the shared store: any number of dispatcher replicas on one
// PostgreSQL database. Every write is one transaction, committed (with
// synchronous_commit on) before the method returns.
type Postgres struct {
	pool   *pgxpool.Pool
	closed atomic.Bool
}

// DefaultPoolSize is how many connections a replica opens at most, unless
// the DSN's pool_max_conns says otherwise; each replica holds one more for
// its partition leases.
const DefaultPoolSize = 16

// OpenPostgres connects to the database the DSN names and brings its
// schema up to date (migrations/, under an advisory lock).
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	config, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: pgx's parse errors leave it out.
		return nil, fmt.Errorf("store: parsing the PostgreSQL DSN: %w", err)
	}
	// A 202 promises the event is on disk, whatever the server's default.
	config.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	if !strings.Contains(dsn, "pool_max_conns") {
		// Commits that wait for the disk together share one flush (group
		// commit): pgx's default of 4 connections would queue them.
		config.MaxConns = DefaultPoolSize
	}
	pool, err := pgxpool.NewWithConfig(ctx, config)
	if err != nil {
		return nil, fmt.Errorf("store: connecting to PostgreSQL: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: migrating the PostgreSQL schema: %w", err)
	}
	return &Postgres{pool: pool}, nil
}

// Close waits for the calls under way and closes the connections.
func (p *Postgres) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	p.pool.Close()
	return nil
}

// fail wraps a failed call's error, or answers ErrClosed once the store is
// closed: a call that races Close gets the pool's own error, which callers
// should not have to tell from a shutdown.
func (p *Postgres) fail(err error, format string, args ...any) error {
	if p.closed.Load() {
		return ErrClosed
	}
	return fmt.Errorf("store: "+format+": %w", append(args, err)...)
}

// open refuses a call on a closed store before it reaches the pool.
func (p *Postgres) open() error {
	if p.closed.Load() {
		return ErrClosed
	}
	return nil
}

// nullTime stores the zero time as NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// utc reads a stored time back as the UTC time it was, zero for NULL.
func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// utcOrNil is utc for the optional times of Health.
func utcOrNil(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

const deliveryColumns = "id, namespace, event_id, endpoint, state, attempts, next_attempt_at, created_at, updated_at, interrupted"

func deliveryArgs(d Delivery) []any {
	return []any{d.ID, d.Namespace, d.EventID, d.Endpoint, string(d.State), d.Attempts, nullTime(d.NextAttemptAt), d.CreatedAt, d.UpdatedAt, d.Interrupted}
}

func scanDelivery(row pgx.CollectableRow) (Delivery, error) {
	var d Delivery
	var state string
	var next, created, updated *time.Time
	if err := row.Scan(&d.ID, &d.Namespace, &d.EventID, &d.Endpoint, &state, &d.Attempts, &next, &created, &updated, &d.Interrupted); err != nil {
		return Delivery{}, err
	}
	d.State, d.NextAttemptAt, d.CreatedAt, d.UpdatedAt = State(state), utc(next), utc(created), utc(updated)
	return d, nil
}

const eventColumns = "namespace, id, type, created_at, data, sandbox, accepted_at, deliveries"

func scanEvent(row pgx.Row) (Event, error) {
	var event Event
	var created, accepted *time.Time
	if err := row.Scan(&event.Namespace, &event.ID, &event.Type, &created, &event.Data, &event.Sandbox, &accepted, &event.Deliveries); err != nil {
		return Event{}, err
	}
	event.CreatedAt, event.AcceptedAt = utc(created), utc(accepted)
	return event, nil
}

// deliveries runs a query of deliveryColumns.
func (p *Postgres) deliveries(ctx context.Context, sql string, args ...any) ([]Delivery, error) {
	rows, err := p.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanDelivery)
}

// acceptSQL stores the event unless one of its id was accepted after $8,
// and then its deliveries, held where the target is or its endpoint's
// health says disabled, in one statement (so one transaction and one
// round trip). Ids come from the sequence in target order, so they sort as
// the deliveries were accepted.
const acceptSQL = `WITH event AS (
	INSERT INTO events AS e (` + eventColumns + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $11)
	ON CONFLICT (namespace, id) DO UPDATE SET type = excluded.type, created_at = excluded.created_at, data = excluded.data,
		sandbox = excluded.sandbox, accepted_at = excluded.accepted_at, deliveries = excluded.deliveries
	WHERE e.accepted_at <= $8
	RETURNING 1
), fanned AS (
	INSERT INTO deliveries (` + deliveryColumns + `)
	SELECT 'dlv_' || lpad(to_hex(nextval('delivery_ids')), 16, '0'), $1, $2, target.endpoint,
		CASE WHEN target.held THEN 'held' ELSE 'pending' END, 0, CASE WHEN target.held THEN NULL ELSE $7::timestamptz END, $7, $7, 0
	FROM (
		SELECT given.endpoint, given.position, given.held OR coalesce(health.disabled, false) AS held
		FROM unnest($9::text[], $10::boolean[]) WITH ORDINALITY AS given(endpoint, held, position)
		LEFT JOIN health ON health.endpoint = $1 || '/' || given.endpoint
	) AS target
	WHERE EXISTS (SELECT FROM event)
	ORDER BY target.position
	RETURNING id, endpoint, state
)
SELECT EXISTS (SELECT FROM event), ARRAY(SELECT id FROM fanned ORDER BY id), ARRAY(SELECT endpoint FROM fanned ORDER BY id),
	ARRAY(SELECT state FROM fanned ORDER BY id)`

// Accept implements Store. The unique key on (namespace, id) makes a
// concurrent accept of the same id wait for this one and then find it.
func (p *Postgres) Accept(ctx context.Context, event Event, targets []Target, dedupeSince time.Time) (Accepted, error) {
	if err := p.open(); err != nil {
		return Accepted{}, err
	}
	endpoints, held := make([]string, len(targets)), make([]bool, len(targets))
	for i, target := range targets {
		endpoints[i], held[i] = target.Endpoint, target.Held
	}
	data := event.Data
	if data == nil {
		data = []byte{}
	}
	var stored bool
	var ids, fannedTo, states []string
	err := p.pool.QueryRow(ctx, acceptSQL, event.Namespace, event.ID, event.Type, nullTime(event.CreatedAt), []byte(data), event.Sandbox,
		event.AcceptedAt, dedupeSince, endpoints, held, len(targets)).Scan(&stored, &ids, &fannedTo, &states)
	if err != nil {
		return Accepted{}, p.fail(err, "accepting event %s/%s", event.Namespace, event.ID)
	}
	if !stored {
		// A new statement sees the first event even when it committed while
		// the insert above waited for it.
		first, err := p.Event(ctx, event.Namespace, event.ID)
		if err != nil {
			return Accepted{}, fmt.Errorf("store: reading the event that %s/%s duplicates: %w", event.Namespace, event.ID, err)
		}
		return Accepted{Event: first, Duplicate: true}, nil
	}
	event.Deliveries = len(targets)
	out := Accepted{Event: event}
	for i, id := range ids {
		delivery := Delivery{
			ID: id, Namespace: event.Namespace, EventID: event.ID, Endpoint: fannedTo[i], State: State(states[i]),
			NextAttemptAt: event.AcceptedAt, CreatedAt: event.AcceptedAt, UpdatedAt: event.AcceptedAt,
		}
		if delivery.State == Held {
			delivery.NextAttemptAt = time.Time{}
		}
		out.Deliveries = append(out.Deliveries, delivery)
	}
	return out, nil
}

const putDeliverySQL = `INSERT INTO deliveries (` + deliveryColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
	ON CONFLICT (id) DO UPDATE SET namespace = excluded.namespace, event_id = excluded.event_id, endpoint = excluded.endpoint,
		state = excluded.state, attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
		created_at = excluded.created_at, updated_at = excluded.updated_at, interrupted = excluded.interrupted`

const attemptColumns = "delivery_id, number, started_at, duration_ms, status_code, error, response"

// attemptConflict keeps one row per attempt number, the last recorded.
const attemptConflict = `ON CONFLICT (delivery_id, number) DO UPDATE SET started_at = excluded.started_at, duration_ms = excluded.duration_ms,
	status_code = excluded.status_code, error = excluded.error, response = excluded.response`

const healthColumns = "endpoint, uid, consecutive_failures, disabled, disabled_at, last_success, last_failure, last_failure_reason, reenable_token"

const putHealthSQL = `INSERT INTO health (` + healthColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ` + healthConflict

// healthConflict keeps one row per endpoint, the last stored.
const healthConflict = `ON CONFLICT (endpoint) DO UPDATE SET uid = excluded.uid, consecutive_failures = excluded.consecutive_failures,
	disabled = excluded.disabled, disabled_at = excluded.disabled_at, last_success = excluded.last_success,
	last_failure = excluded.last_failure, last_failure_reason = excluded.last_failure_reason, reenable_token = excluded.reenable_token`

// healthArgs are the values of healthColumns.
func healthArgs(h Health) []any {
	return []any{h.Endpoint, h.UID, h.ConsecutiveFailures, h.Disabled, h.DisabledAt, h.LastSuccess, h.LastFailure, h.LastFailureReason, h.ReenableToken}
}

// inLockOrder sorts a copy of items by key, keeping the callers' order
// among equal keys: every write locks rows in key order, so that two
// writes over the same rows wait for each other instead of deadlocking.
func inLockOrder[T any](items []T, key func(T) string) []T {
	sorted := slices.Clone(items)
	slices.SortStableFunc(sorted, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return sorted
}

// send runs a batch in one implicit transaction and one round trip, and
// returns once it is committed, with each query's rows affected.
func (p *Postgres) send(ctx context.Context, batch *pgx.Batch) (affected []int64, err error) {
	results := p.pool.SendBatch(ctx, batch)
	defer func() {
		// Close reads up to the commit: before it, nothing is durable.
		err = errors.Join(err, results.Close())
	}()
	affected = make([]int64, batch.Len())
	for i := range affected {
		tag, err := results.Exec()
		if err != nil {
			return nil, err
		}
		affected[i] = tag.RowsAffected()
	}
	return affected, nil
}

// lockDeliveriesSQL locks a batch's deliveries in id order before any of
// them is written (the column sorts as Go strings do, COLLATE "C").
const lockDeliveriesSQL = `SELECT FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE`

// recordAttemptsSQL applies a round of AttemptRecords, at most one per
// delivery, as compare-and-sets in one statement: a delivery moves only
// while it is pending at the attempt before, and its attempt and health
// are stored only when it did. Of several moved records of one endpoint,
// the last one's health is stored (one write per row and statement).
const recordAttemptsSQL = `WITH given AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::timestamptz[], $5::timestamptz[], $6::integer[], $7::text[],
		$8::integer[], $9::timestamptz[], $10::double precision[], $11::integer[], $12::text[], $13::text[]) WITH ORDINALITY
		AS g(id, state, attempts, next_attempt_at, updated_at, interrupted, attempt_of, number, started_at, duration_ms, status_code, error, response, position)
), moved AS (
	UPDATE deliveries AS d SET state = g.state, attempts = g.attempts, next_attempt_at = g.next_attempt_at, updated_at = g.updated_at,
		interrupted = g.interrupted
	FROM given AS g
	WHERE d.id = g.id AND d.state = 'pending' AND d.attempts = g.attempts - 1
	RETURNING g.position
), new_attempts AS (
	INSERT INTO attempts (` + attemptColumns + `)
	SELECT g.attempt_of, g.number, g.started_at, g.duration_ms, g.status_code, g.error, g.response
	FROM given AS g JOIN moved USING (position)
	ORDER BY g.attempt_of, g.number
	` + attemptConflict + `
), new_health AS (
	INSERT INTO health (` + healthColumns + `)
	SELECT DISTINCT ON (h.endpoint) h.endpoint, h.uid, h.consecutive_failures, h.disabled, h.disabled_at, h.last_success, h.last_failure,
		h.last_failure_reason, h.reenable_token
	FROM unnest($14::bigint[], $15::text[], $16::text[], $17::integer[], $18::boolean[], $19::timestamptz[], $20::timestamptz[],
		$21::timestamptz[], $22::text[], $23::text[])
		AS h(position, endpoint, uid, consecutive_failures, disabled, disabled_at, last_success, last_failure, last_failure_reason, reenable_token)
	JOIN moved USING (position)
	ORDER BY h.endpoint, h.position DESC
	` + healthConflict + `
)
SELECT coalesce(array_agg(position), '{}') FROM moved`

// recordRound is one round of RecordAttempts as recordAttemptsSQL's
// arguments, and the index of each record in the caller's slice.
type recordRound struct {
	index                                       []int
	ids, states, attemptOf, errors, responses   []string
	attempts, interrupted, numbers, statusCodes []int
	nextAttemptAt, updatedAt, startedAt         []*time.Time
	durations                                   []float64
	healthAt                                    []int64
	endpoints, uids, reasons, tokens            []string
	failures                                    []int
	disabled                                    []bool
	disabledAt, lastSuccess, lastFailure        []*time.Time
}

func (r *recordRound) add(index int, record AttemptRecord) {
	d, a := record.Delivery, record.Attempt
	r.index = append(r.index, index)
	r.ids, r.states, r.attempts = append(r.ids, d.ID), append(r.states, string(d.State)), append(r.attempts, d.Attempts)
	r.nextAttemptAt, r.updatedAt, r.interrupted = append(r.nextAttemptAt, nullTime(d.NextAttemptAt)), append(r.updatedAt, &d.UpdatedAt), append(r.interrupted, d.Interrupted)
	r.attemptOf, r.numbers, r.startedAt = append(r.attemptOf, a.DeliveryID), append(r.numbers, a.Number), append(r.startedAt, &a.StartedAt)
	r.durations, r.statusCodes = append(r.durations, a.DurationMS), append(r.statusCodes, a.StatusCode)
	r.errors, r.responses = append(r.errors, a.Error), append(r.responses, a.Response)
	if h := record.Health; h != nil {
		r.healthAt = append(r.healthAt, int64(len(r.ids))) // the record's position in the round, from 1
		r.endpoints, r.uids, r.failures = append(r.endpoints, h.Endpoint), append(r.uids, h.UID), append(r.failures, h.ConsecutiveFailures)
		r.disabled, r.disabledAt = append(r.disabled, h.Disabled), append(r.disabledAt, h.DisabledAt)
		r.lastSuccess, r.lastFailure = append(r.lastSuccess, h.LastSuccess), append(r.lastFailure, h.LastFailure)
		r.reasons, r.tokens = append(r.reasons, h.LastFailureReason), append(r.tokens, h.ReenableToken)
	}
}

func (r *recordRound) args() []any {
	return []any{r.ids, r.states, r.attempts, r.nextAttemptAt, r.updatedAt, r.interrupted, r.attemptOf, r.numbers, r.startedAt, r.durations,
		r.statusCodes, r.errors, r.responses, r.healthAt, r.endpoints, r.uids, r.failures, r.disabled, r.disabledAt, r.lastSuccess,
		r.lastFailure, r.reasons, r.tokens}
}

// RecordAttempts implements Store, in one transaction and one round trip.
// Every delivery of the batch is locked first, in id order, so that two
// writers of the same deliveries wait for each other instead of
// deadlocking. The records then apply in rounds, each holding at most one
// record of a delivery, in the callers' order: attempts N and N+1 of one
// delivery may share a batch. A record with an endpoint's health goes in
// no earlier round than the endpoint's health records before it, so that
// the health stored is the last applied one's in the callers' order (a
// round stores the last of its own).
func (p *Postgres) RecordAttempts(ctx context.Context, records []AttemptRecord) ([]bool, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	ids := make([]string, len(records))
	var rounds []*recordRound
	// next is the first round a delivery's next record may go in, and
	// healthRound the latest round with a health record of an endpoint.
	next, healthRound := map[string]int{}, map[string]int{}
	for i, record := range records {
		ids[i] = record.Delivery.ID
		round := next[record.Delivery.ID]
		if record.Health != nil {
			round = max(round, healthRound[record.Health.Endpoint])
			healthRound[record.Health.Endpoint] = round
		}
		next[record.Delivery.ID] = round + 1
		for len(rounds) <= round {
			rounds = append(rounds, &recordRound{})
		}
		rounds[round].add(i, record)
	}
	batch := &pgx.Batch{}
	batch.Queue(lockDeliveriesSQL, ids)
	for _, round := range rounds {
		batch.Queue(recordAttemptsSQL, round.args()...)
	}
	applied := make([]bool, len(records))
	results := p.pool.SendBatch(ctx, batch)
	_, err := results.Exec()
	for _, round := range rounds {
		if err != nil {
			break
		}
		var moved []int64
		if err = results.QueryRow().Scan(&moved); err == nil {
			for _, position := range moved {
				applied[round.index[position-1]] = true
			}
		}
	}
	// Close reads up to the commit: before it, nothing is durable.
	if err = errors.Join(err, results.Close()); err != nil {
		return nil, p.fail(err, "recording %d attempts", len(records))
	}
	return applied, nil
}

// UpdateDeliveries implements Store.
func (p *Postgres) UpdateDeliveries(ctx context.Context, deliveries []Delivery) error {
	if err := p.open(); err != nil {
		return err
	}
	batch := &pgx.Batch{}
	for _, delivery := range inLockOrder(deliveries, func(d Delivery) string { return d.ID }) {
		batch.Queue(putDeliverySQL, deliveryArgs(delivery)...)
	}
	if _, err := p.send(ctx, batch); err != nil {
		return p.fail(err, "updating %d deliveries", len(deliveries))
	}
	return nil
}

// changeDeliverySQL is a compare-and-set: a delivery that moved on since
// the caller read it is not updated. A concurrent change of the same row
// waits for this one's commit and then compares against what it stored.
const changeDeliverySQL = `UPDATE deliveries SET ` + deliverySet + ` WHERE id = $1 AND state = $11 AND attempts = $12`

// deliverySet stores deliveryArgs ($1 the id) over a delivery's row.
const deliverySet = `namespace = $2, event_id = $3, endpoint = $4, state = $5, attempts = $6,
	next_attempt_at = $7, created_at = $8, updated_at = $9, interrupted = $10`

// ChangeDeliveries implements Store.
func (p *Postgres) ChangeDeliveries(ctx context.Context, changes []DeliveryChange) ([]bool, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	type indexed struct {
		DeliveryChange
		index int
	}
	ordered := make([]indexed, len(changes))
	for i, change := range changes {
		ordered[i] = indexed{change, i}
	}
	ordered = inLockOrder(ordered, func(c indexed) string { return c.To.ID })
	batch := &pgx.Batch{}
	for _, change := range ordered {
		batch.Queue(changeDeliverySQL, append(deliveryArgs(change.To), string(change.State), change.Attempts)...)
	}
	affected, err := p.send(ctx, batch)
	if err != nil {
		return nil, p.fail(err, "changing %d deliveries", len(changes))
	}
	applied := make([]bool, len(changes))
	for i, change := range ordered {
		applied[change.index] = affected[i] == 1
	}
	return applied, nil
}

// PutHealth implements Store.
func (p *Postgres) PutHealth(ctx context.Context, health Health) error {
	if err := p.open(); err != nil {
		return err
	}
	batch := &pgx.Batch{}
	batch.Queue(putHealthSQL, healthArgs(health)...)
	if _, err := p.send(ctx, batch); err != nil {
		return p.fail(err, "storing health of %s", health.Endpoint)
	}
	return nil
}

// ActivePage implements Store: in id order across the partitions, which is
// each partition's oldest first; next is the page's last id.
func (p *Postgres) ActivePage(ctx context.Context, partitions []int, after string, limit int) ([]Delivery, string, error) {
	if err := p.open(); err != nil {
		return nil, "", err
	}
	if limit < 1 {
		return nil, "", nil
	}
	// One more than the page says whether another follows.
	out, err := p.deliveries(ctx, "SELECT "+deliveryColumns+" FROM deliveries WHERE state IN ('pending', 'held') AND partition = ANY($1) AND id > $2 ORDER BY id LIMIT $3",
		partitions, after, limit+1)
	if err != nil {
		return nil, "", p.fail(err, "listing active deliveries")
	}
	if len(out) <= limit {
		return out, "", nil
	}
	return out[:limit], out[limit-1].ID, nil
}

// Healths implements Store.
func (p *Postgres) Healths(ctx context.Context) ([]Health, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx, `SELECT endpoint, uid, consecutive_failures, disabled, disabled_at, last_success, last_failure,
		last_failure_reason, reenable_token FROM health ORDER BY endpoint`)
	if err == nil {
		var out []Health
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Health, error) {
			var h Health
			err := row.Scan(&h.Endpoint, &h.UID, &h.ConsecutiveFailures, &h.Disabled, &h.DisabledAt, &h.LastSuccess, &h.LastFailure,
				&h.LastFailureReason, &h.ReenableToken)
			h.DisabledAt, h.LastSuccess, h.LastFailure = utcOrNil(h.DisabledAt), utcOrNil(h.LastSuccess), utcOrNil(h.LastFailure)
			return h, err
		})
		if err == nil {
			return out, nil
		}
	}
	return nil, p.fail(err, "listing health")
}

// Event implements Store.
func (p *Postgres) Event(ctx context.Context, namespace, id string) (Event, error) {
	if err := p.open(); err != nil {
		return Event{}, err
	}
	event, err := scanEvent(p.pool.QueryRow(ctx, "SELECT "+eventColumns+" FROM events WHERE namespace = $1 AND id = $2", namespace, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Event{}, p.fail(err, "event %s/%s", namespace, id)
	}
	return event, nil
}

// Events implements Store, in one query.
func (p *Postgres) Events(ctx context.Context, deliveries []Delivery) ([]Event, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	namespaces, ids := make([]string, len(deliveries)), make([]string, len(deliveries))
	for i, delivery := range deliveries {
		namespaces[i], ids[i] = delivery.Namespace, delivery.EventID
	}
	rows, err := p.pool.Query(ctx, "SELECT "+eventColumns+` FROM events
		JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[])) AS wanted (wanted_namespace, wanted_id) ON namespace = wanted_namespace AND id = wanted_id`,
		namespaces, ids)
	var found []Event
	if err == nil {
		found, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Event, error) { return scanEvent(row) })
	}
	if err != nil {
		return nil, p.fail(err, "reading %d events", len(deliveries))
	}
	byKey := make(map[[2]string]Event, len(found))
	for _, event := range found {
		byKey[[2]string{event.Namespace, event.ID}] = event
	}
	events := make([]Event, len(deliveries))
	for i, delivery := range deliveries {
		events[i] = byKey[[2]string{delivery.Namespace, delivery.EventID}]
	}
	return events, nil
}

// DeliveriesOf implements Store.
func (p *Postgres) DeliveriesOf(ctx context.Context, namespace, eventID string) ([]Delivery, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	out, err := p.deliveries(ctx, "SELECT "+deliveryColumns+" FROM deliveries WHERE namespace = $1 AND event_id = $2 ORDER BY id", namespace, eventID)
	if err != nil {
		return nil, p.fail(err, "deliveries of %s/%s", namespace, eventID)
	}
	return out, nil
}

// Delivery implements Store.
func (p *Postgres) Delivery(ctx context.Context, id string) (Delivery, error) {
	if err := p.open(); err != nil {
		return Delivery{}, err
	}
	out, err := p.deliveries(ctx, "SELECT "+deliveryColumns+" FROM deliveries WHERE id = $1", id)
	if err == nil && len(out) == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return Delivery{}, p.fail(err, "delivery %s", id)
	}
	return out[0], nil
}

// endpointDeliveriesSQL reads one page, newest first, and one delivery
// more to tell whether another page follows. A NULL limit is no limit.
const endpointDeliveriesSQL = "SELECT " + deliveryColumns + ` FROM deliveries
	WHERE namespace = $1 AND endpoint = $2 AND ($3 = '' OR state = $3)
		AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5)
		AND ($6 = '' OR id < $6)
	ORDER BY id DESC LIMIT $7`

// EndpointDeliveries implements Store.
func (p *Postgres) EndpointDeliveries(ctx context.Context, namespace, endpoint string, query DeliveryQuery) ([]Delivery, string, error) {
	if err := p.open(); err != nil {
		return nil, "", err
	}
	var limit *int
	if query.Limit > 0 {
		limit = new(query.Limit + 1)
	}
	page, err := p.deliveries(ctx, endpointDeliveriesSQL, namespace, endpoint, string(query.State), nullTime(query.Since), nullTime(query.Until),
		query.After, limit)
	if err != nil {
		return nil, "", p.fail(err, "deliveries of endpoint %s/%s", namespace, endpoint)
	}
	if query.Limit > 0 && len(page) > query.Limit {
		page = page[:query.Limit]
		return page, page[len(page)-1].ID, nil
	}
	return page, "", nil
}

// Attempts implements Store.
func (p *Postgres) Attempts(ctx context.Context, deliveryID string) ([]Attempt, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx, `SELECT delivery_id, number, started_at, duration_ms, status_code, error, response
		FROM attempts WHERE delivery_id = $1 ORDER BY number`, deliveryID)
	if err == nil {
		var out []Attempt
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Attempt, error) {
			var a Attempt
			err := row.Scan(&a.DeliveryID, &a.Number, &a.StartedAt, &a.DurationMS, &a.StatusCode, &a.Error, &a.Response)
			a.StartedAt = a.StartedAt.UTC()
			return a, err
		})
		if err == nil {
			return out, nil
		}
	}
	return nil, p.fail(err, "attempts of %s", deliveryID)
}

// Sweep implements Store. The events go in a second statement, which sees
// the first one's deletes; both commit together.
func (p *Postgres) Sweep(ctx context.Context, before time.Time) (int, error) {
	if err := p.open(); err != nil {
		return 0, err
	}
	batch := &pgx.Batch{}
	batch.Queue(`WITH gone AS (
			DELETE FROM deliveries WHERE state IN ('succeeded', 'failed') AND updated_at < $1 RETURNING id
		), attempts_gone AS (
			DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone)
		)
		SELECT count(*) FROM gone`, before)
	batch.Queue(`DELETE FROM events e WHERE accepted_at < $1
		AND NOT EXISTS (SELECT FROM deliveries d WHERE d.namespace = e.namespace AND d.event_id = e.id)`, before)
	results := p.pool.SendBatch(ctx, batch)
	var swept int
	err := results.QueryRow().Scan(&swept)
	if err == nil {
		_, err = results.Exec()
	}
	// Close reads up to the commit.
	if err = errors.Join(err, results.Close()); err != nil {
		return 0, p.fail(err, "sweeping before %s", before.Format(time.RFC3339))
	}
	return swept, nil
}

var _ Store = (*Postgres)(nil)
