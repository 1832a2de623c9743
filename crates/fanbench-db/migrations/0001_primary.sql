-- The primary database: what a sign-up must leave behind in either design.

-- A user who signed up. The email is unique: signing up twice with one address is a conflict (409).
CREATE TABLE users (
    id           uuid PRIMARY KEY,
    email        text NOT NULL UNIQUE,
    name         text NOT NULL,
    phone        text,
    device_token text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The naive design writes one row per notification it sent, here in the primary database and inside the
-- sign-up's own transaction. (The async design keeps its logs in a dedicated store instead.)
CREATE TABLE notification_log (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id),
    channel             text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    provider_status     smallint NOT NULL,
    provider_latency_us bigint NOT NULL,
    sent_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_log_user_id ON notification_log (user_id);

-- Sign-ups per day, bumped by every sign-up: the shared hot row the story saw contended.
CREATE TABLE signup_counter (
    day   date PRIMARY KEY,
    count bigint NOT NULL
);
