-- The store's tables, as the bolt store keeps them.

-- Delivery ids are 'dlv_' and this sequence in 16 hex digits, so that they
-- sort as text in the order the deliveries were accepted.
CREATE SEQUENCE delivery_ids;

CREATE TABLE events (
    namespace   text        NOT NULL,
    id          text        NOT NULL,
    type        text        NOT NULL,
    created_at  timestamptz,
    -- The producer's JSON, byte for byte: jsonb would reformat it.
    data        bytea       NOT NULL,
    sandbox     boolean     NOT NULL,
    accepted_at timestamptz NOT NULL,
    deliveries  integer     NOT NULL,
    -- One event per id: Accept replaces it only once past the dedupe window.
    PRIMARY KEY (namespace, id)
);

CREATE TABLE deliveries (
    id              text        PRIMARY KEY COLLATE "C",
    namespace       text        NOT NULL,
    event_id        text        NOT NULL,
    endpoint        text        NOT NULL,
    state           text        NOT NULL,
    attempts        integer     NOT NULL,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    interrupted     integer     NOT NULL
);

CREATE INDEX deliveries_by_event ON deliveries (namespace, event_id);
CREATE INDEX deliveries_by_endpoint ON deliveries (namespace, endpoint, id);
CREATE INDEX deliveries_active ON deliveries (id) WHERE state IN ('pending', 'held');
CREATE INDEX deliveries_finished ON deliveries (updated_at) WHERE state IN ('succeeded', 'failed');

CREATE TABLE attempts (
    delivery_id text             NOT NULL COLLATE "C",
    number      integer          NOT NULL,
    started_at  timestamptz      NOT NULL,
    duration_ms double precision NOT NULL,
    status_code integer          NOT NULL,
    error       text             NOT NULL,
    response    text             NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

CREATE TABLE health (
    endpoint             text    PRIMARY KEY,
    uid                  text    NOT NULL,
    consecutive_failures integer NOT NULL,
    disabled             boolean NOT NULL,
    disabled_at          timestamptz,
    last_success         timestamptz,
    last_failure         timestamptz,
    last_failure_reason  text    NOT NULL,
    reenable_token       text    NOT NULL
);
