//! The sign-up's shared pieces: the user to insert ([`NewUser`]) for both designs, and the naive
//! design's statements (insert the user, bump the day's counter row). The async design runs its
//! own single statement (`async_server::signup`), built from the same `NewUser`.

use sqlx::PgConnection;
use uuid::Uuid;

/// A user to insert.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub name: &'a str,
    pub phone: Option<&'a str>,
    pub device_token: Option<&'a str>,
}

impl<'a> NewUser<'a> {
    pub fn new(
        id: Uuid,
        email: &'a str,
        name: &'a str,
        phone: Option<&'a str>,
        device_token: Option<&'a str>,
    ) -> Self {
        Self {
            id,
            email,
            name,
            phone,
            device_token,
        }
    }
}

/// Whether the insert took place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Yes,
    /// The email is already registered (unique violation); the transaction must be rolled back.
    DuplicateEmail,
}

/// Inserts the user. A concurrent, uncommitted sign-up of the same email makes this wait for it.
pub async fn insert_user(
    conn: &mut PgConnection,
    user: &NewUser<'_>,
) -> Result<Inserted, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, name, phone, device_token) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user.id)
    .bind(user.email)
    .bind(user.name)
    .bind(user.phone)
    .bind(user.device_token)
    .execute(conn)
    .await;
    match inserted {
        Ok(_) => Ok(Inserted::Yes),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Inserted::DuplicateEmail),
        Err(e) => Err(e),
    }
}

/// Bumps today's sign-up counter: the shared hot row. Its lock is held until the transaction ends,
/// so call it last, just before the commit.
pub async fn bump_signup_counter(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signup_counter (day, count) VALUES (current_date, 1) \
         ON CONFLICT (day) DO UPDATE SET count = signup_counter.count + 1",
    )
    .execute(conn)
    .await?;
    Ok(())
}
