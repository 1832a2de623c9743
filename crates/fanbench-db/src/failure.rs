//! Which database failures are the database's fault and worth retrying, as opposed to a bug.
//!
//! Both designs answer a request whose statement failed this way with 503 and `Retry-After`, not
//! 500; the classification lives here, once, because only this crate may know sqlx's errors and
//! PostgreSQL's SQLSTATEs (signup-core, which builds the answer, must not know the database).

/// Whether `e` means the database was unreachable, went away, ran out of resources or lost a
/// concurrency race, so that the same request can succeed later. A failure in the middle of a
/// transaction (above all at `COMMIT`) leaves it unknown whether the transaction committed.
///
/// Transient: the connection broke or could not be had (`Io`, `Tls`, `Protocol` — a stream cut
/// mid-message —, `PoolTimedOut`, `PoolClosed`, `WorkerCrashed`), and database errors whose SQLSTATE
/// [`is_transient_sqlstate`] accepts. Anything else (a constraint, a type, a missing row or column)
/// is a bug a retry does not fix.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| is_transient_sqlstate(&c)),
        _ => false,
    }
}

/// Whether a PostgreSQL SQLSTATE is transient: class 08 (connection exception), 53 (insufficient
/// resources: disk full, out of memory, too many connections), 57P01/57P02/57P03 (the server is
/// shutting down by an administrator, after a crash, or cannot accept connections yet, e.g. during
/// recovery), 40001 (serialization failure) and 40P01 (deadlock detected). Other class 57 codes
/// (57014, a cancelled query) are not: nothing here cancels queries, so one is worth a 500.
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        for code in [
            "08000", "08003", "08006", "08001", "08004", "08P01", "53000", "53100", "53200",
            "53300", "57P01", "57P02", "57P03", "40001", "40P01",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in [
            "23505", "23503", "22021", "22P02", "42P01", "42703", "57014", "57000", "40002",
            "40003", "25P02", "XX000", "", "0",
        ] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn connection_level_errors_are_transient_and_bugs_are_not() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        for e in [
            sqlx::Error::Io(io()),
            sqlx::Error::Tls(Box::new(io())),
            sqlx::Error::Protocol("unexpected end of stream".into()),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(is_transient(&e), "{e:?}");
        }
        for e in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
            sqlx::Error::Configuration("bad".into()),
            sqlx::Error::Decode("bad".into()),
            sqlx::Error::TypeNotFound {
                type_name: "x".into(),
            },
        ] {
            assert!(!is_transient(&e), "{e:?}");
        }
    }
}
