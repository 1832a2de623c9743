-- Attempt numbers never repeat, even across a dead-letter replay: a replay used to reset `attempt`
-- to 0, so the provider's log and the delivery log saw attempt 1 twice for one delivery. Now a
-- replay keeps `attempt` and records here how many attempts came before it; the budget of
-- `--max-attempts` (and the backoff) counts attempts since then. A constant default makes this
-- a catalogue-only change, however large the table.
ALTER TABLE deliveries ADD COLUMN attempt_base integer NOT NULL DEFAULT 0;
