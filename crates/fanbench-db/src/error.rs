use std::path::PathBuf;

/// What can go wrong while finding, starting or preparing PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No PostgreSQL server binaries were found; the message carries the command that installs them.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or under \
         /usr/lib/postgresql/*/bin; install them with `sudo apt-get install -y postgresql` \
         (or point DATABASE_URL at a running server)"
    )]
    BinariesNotFound,
    /// The process runs as root and there is no unprivileged `postgres` user to run the server as.
    #[error(
        "running as root, but there is no `postgres` user to run the server as (PostgreSQL refuses \
         root); `sudo apt-get install -y postgresql` creates it"
    )]
    NoPostgresUser,
    /// A helper program could not be run at all.
    #[error("could not run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A helper program ran and failed; `output` is what it printed.
    #[error("{program} failed: {output}")]
    Command { program: String, output: String },
    /// File-system work around the cluster's directory failed.
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database URL could not be understood.
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    /// A query or connection failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
