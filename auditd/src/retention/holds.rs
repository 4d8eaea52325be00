//! Legal holds: a named time range, optionally narrowed to a user or a resource, that
//! keeps every partition it touches until it is lifted. The rows keep who placed and
//! lifted each hold and why; auditd also writes an audit record of each (the command
//! does, `commands::retention`).

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

/// A hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Its name.
    pub name: String,
    /// The records it keeps were created from this instant...
    pub range_start: DateTime<Utc>,
    /// ...to before this one.
    pub range_end: DateTime<Utc>,
    /// Only a partition with a record of this user in the range.
    pub username: Option<String>,
    /// Only a partition with a record of this resource type in the range.
    pub resource_type: Option<String>,
    /// Only a partition with a record of this resource in the range.
    pub resource_id: Option<String>,
    /// Why it was placed.
    pub reason: String,
    /// Who placed it.
    pub placed_by: String,
    /// When.
    pub placed_at: DateTime<Utc>,
    /// When it was lifted, if it was.
    pub lifted_at: Option<DateTime<Utc>>,
    /// By whom.
    pub lifted_by: Option<String>,
}

const HOLD_COLUMNS: &str = "name, range_start, range_end, username, resource_type, resource_id, \
                            reason, placed_by, placed_at, lifted_at, lifted_by";

fn hold(row: &tokio_postgres::Row) -> Result<Hold, tokio_postgres::Error> {
    Ok(Hold {
        name: row.try_get(0)?,
        range_start: row.try_get(1)?,
        range_end: row.try_get(2)?,
        username: row.try_get(3)?,
        resource_type: row.try_get(4)?,
        resource_id: row.try_get(5)?,
        reason: row.try_get(6)?,
        placed_by: row.try_get(7)?,
        placed_at: row.try_get(8)?,
        lifted_at: row.try_get(9)?,
        lifted_by: row.try_get(10)?,
    })
}

/// The holds in force.
pub async fn active_holds(client: &impl GenericClient) -> Result<Vec<Hold>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {HOLD_COLUMNS} FROM audit_legal_holds WHERE lifted_at IS NULL ORDER BY name"),
            &[],
        )
        .await?;
    rows.iter().map(hold).collect()
}

/// Every hold, lifted ones too, newest first.
pub async fn all_holds(client: &impl GenericClient) -> Result<Vec<Hold>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {HOLD_COLUMNS} FROM audit_legal_holds ORDER BY placed_at DESC, name"),
            &[],
        )
        .await?;
    rows.iter().map(hold).collect()
}

/// Why a hold could not be placed or lifted.
#[derive(Debug)]
pub enum HoldError {
    /// A hold of that name exists already (lifted or not: names are not reused, so that
    /// the audit records of one hold never speak of another).
    Exists(String),
    /// No hold in force has that name.
    NotInForce(String),
    /// The database refused (a name not of letters, digits, `.`, `_`, `-`; an empty range).
    Database(tokio_postgres::Error),
}

impl std::fmt::Display for HoldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldError::Exists(name) => write!(
                f,
                "a hold named {name:?} exists already; names are not reused"
            ),
            HoldError::NotInForce(name) => write!(f, "no hold named {name:?} is in force"),
            HoldError::Database(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HoldError {}

/// Places `hold` (its `placed_at` and lift fields are ignored).
pub async fn place(client: &impl GenericClient, hold: &Hold) -> Result<(), HoldError> {
    let placed = client
        .execute(
            "INSERT INTO audit_legal_holds \
               (name, range_start, range_end, username, resource_type, resource_id, reason, placed_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING",
            &[
                &hold.name,
                &hold.range_start,
                &hold.range_end,
                &hold.username,
                &hold.resource_type,
                &hold.resource_id,
                &hold.reason,
                &hold.placed_by,
            ],
        )
        .await
        .map_err(HoldError::Database)?;
    if placed == 0 {
        return Err(HoldError::Exists(hold.name.clone()));
    }
    Ok(())
}

/// Lifts the hold `name` in force, by `who`; returns it as it was.
pub async fn lift(client: &impl GenericClient, name: &str, who: &str) -> Result<Hold, HoldError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE audit_legal_holds SET lifted_at = now(), lifted_by = $2 \
                 WHERE name = $1 AND lifted_at IS NULL RETURNING {HOLD_COLUMNS}"
            ),
            &[&name, &who],
        )
        .await
        .map_err(HoldError::Database)?;
    match row {
        Some(row) => hold(&row).map_err(HoldError::Database),
        None => Err(HoldError::NotInForce(name.to_owned())),
    }
}
