-- Only a pending row can be leased: a claim takes pending rows, and every change of state (a
-- finish, a release, a replay) clears the lease. The finish relies on it: it guards each row by
-- lease owner and attempt alone, so that PostgreSQL finds the row by its primary key and is not
-- tempted by the partial index of pending rows (see `queue::finish`). Checked here, it cannot
-- silently stop being true.
ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_leased_rows_pending CHECK (locked_by IS NULL OR state = 'pending');
