-- The async design counts a day's sign-ups by reading `users` (`async_server::signups_on`) instead
-- of bumping the shared `signup_counter` row on every sign-up. A BRIN index keeps that read to the
-- day's pages: `created_at` grows with the table's physical order, and a BRIN index costs an insert
-- next to nothing (no per-row entry, no hot right-hand B-tree page), unlike the counter's row lock.
CREATE INDEX users_created_at_brin ON users USING brin (created_at);
