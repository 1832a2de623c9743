-- The async design's transactional outbox and per-channel queue, in one table: a row per
-- (sign-up event, channel). It is inserted in the sign-up's own transaction, so the work exists if
-- and only if the user does, and it stays the source of truth for delivery state.
CREATE TABLE deliveries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id),
    channel     text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    address     text NOT NULL,
    -- pending: waiting or claimed; done: the provider acknowledged it; dead: gave up (replayable).
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
    -- Attempts started so far; a finish must name the attempt it belongs to.
    attempt     integer NOT NULL DEFAULT 0,
    -- When the row is next due. While claimed it is the lease's expiry: a worker that dies leaves
    -- the row to fall due again when its lease runs out.
    run_at      timestamptz NOT NULL DEFAULT now(),
    -- The worker holding the lease, if any.
    locked_by   uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    last_error  text,
    UNIQUE (event_id, channel)
);

-- Claims look only at pending rows of one channel in due order; the partial index stays small
-- however many finished rows wait to be pruned.
CREATE INDEX deliveries_due ON deliveries (channel, run_at, id) WHERE state = 'pending';
-- Pruning finds finished rows by age.
CREATE INDEX deliveries_done ON deliveries (finished_at) WHERE state = 'done';
-- Dead letters are listed and replayed by channel.
CREATE INDEX deliveries_dead ON deliveries (channel, id) WHERE state = 'dead';

-- A queue table churns: vacuum it eagerly so dead tuples do not pile up behind the claims.
ALTER TABLE deliveries SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
