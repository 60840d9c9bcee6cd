-- Each delivery's partition (store.Partition in Go: the first four bytes of
-- md5('<namespace>/<endpoint>') modulo 64), the unit one dispatcher replica
-- owns. Computed here so that rows stored before this version get one too.
ALTER TABLE deliveries ADD COLUMN partition integer NOT NULL
    GENERATED ALWAYS AS ((('x' || substr(md5(namespace || '/' || endpoint), 1, 8))::bit(32)::bigint % 64)::integer) STORED;

DROP INDEX deliveries_active;
CREATE INDEX deliveries_active ON deliveries (partition, id) WHERE state IN ('pending', 'held');
