-- The broker design's transactional outbox: one row per message to publish to JetStream. A
-- sign-up inserts its row in the same statement as the user, so the message exists if and only if
-- the user does; the relay publishes rows in id order and sets `published_at` only after
-- JetStream acknowledged the publish. A dead-letter replay inserts a row too (for one channel).
CREATE TABLE broker_outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The `Nats-Msg-Id` header: the event id for a sign-up, so JetStream drops a re-publish within
    -- its duplicate window; `<event id>:<channel>:replay:<dead letter id>` for a replay.
    msg_id       text NOT NULL UNIQUE,
    event_id     uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES users (id),
    subject      text NOT NULL,
    -- The channels this message asks for and their addresses, in the same order.
    channels     text[] NOT NULL,
    addresses    text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

-- The relay reads only unpublished rows; the partial index stays small however many published
-- rows the table keeps.
CREATE INDEX broker_outbox_unpublished ON broker_outbox (id) WHERE published_at IS NULL;
CREATE INDEX broker_outbox_event ON broker_outbox (event_id);
-- The relay's pruner deletes published rows by age.
CREATE INDEX broker_outbox_published ON broker_outbox (published_at) WHERE published_at IS NOT NULL;

-- Deliveries given up on after the last attempt (`fanbench dlq list|replay --design broker`).
-- JetStream forgets a message once every consumer has acknowledged or terminated it, so the
-- dead letter is kept here, in PostgreSQL, where it can be listed and replayed.
CREATE TABLE broker_dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid NOT NULL,
    user_id     uuid NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    address     text NOT NULL,
    -- JetStream's delivery count of the last attempt.
    attempt     integer NOT NULL,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set when replayed; a replayed letter that dies again gets a new row.
    replayed_at timestamptz
);

-- One live dead letter per delivery: a redelivery of a message whose dead letter was written but
-- whose terminate was lost writes nothing twice.
CREATE UNIQUE INDEX broker_dead_letters_live ON broker_dead_letters (event_id, channel)
    WHERE replayed_at IS NULL;
