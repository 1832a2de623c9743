//! The primary database of both designs: its schema and migrations, and the throwaway PostgreSQL
//! cluster that fanbench starts for itself when it is given no `DATABASE_URL`.
//!
//! This crate knows PostgreSQL and nothing of HTTP, providers or load. It is not a general database
//! toolkit: the cluster is tuned for nothing, durable by default, and lives exactly as long as its
//! owner process.

mod cluster;
mod error;
mod failure;
mod schema;
pub mod signup;
/// Test databases, with the `testing` feature: dev-dependencies turn it on, so none of it ships in
/// the binary.
#[cfg(feature = "testing")]
pub mod testing;

pub use cluster::{Cluster, ClusterOptions, find_pg_bin};
pub use error::DbError;
pub use failure::{is_transient, is_transient_sqlstate};
pub use schema::{
    Database, MIGRATOR, connect_pool, create_database, database_url_with_name, drop_database,
    ensure_database, migrate,
};
