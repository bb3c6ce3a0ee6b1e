//! Sending NOTIFYs: the channels the roles and the web server wake up on
//! (`builds_added`, `build_started`, `step_started`, `step_finished`,
//! `build_finished`, `eval_*`, …). Sent inside the transaction that made
//! the change, PostgreSQL delivers them only once it commits.

use sqlx::PgConnection;

use crate::ids::BuildId;

/// The channel that tells the notify role that a notification is due
/// which it did not schedule itself (the admin tried a given-up one
/// again).
pub const NOTIFICATIONS_DUE: &str = "notifications_due";

/// Sends `payload` on `channel`.
pub async fn send(
    conn: &mut PgConnection,
    channel: &str,
    payload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sends `payload` on `channel` outside any transaction.
pub async fn publish(pool: &sqlx::PgPool, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}

/// Sends each `(channel, payload)` in one statement.
pub async fn send_all(
    conn: &mut PgConnection,
    notes: &[(&str, String)],
) -> Result<(), sqlx::Error> {
    if notes.is_empty() {
        return Ok(());
    }
    let channels: Vec<&str> = notes.iter().map(|(c, _)| *c).collect();
    let payloads: Vec<&str> = notes.iter().map(|(_, p)| p.as_str()).collect();
    sqlx::query("select pg_notify(c, p) from unnest($1::text[], $2::text[]) as n(c, p)")
        .bind(&channels)
        .bind(&payloads)
        .execute(conn)
        .await?;
    Ok(())
}

/// `build_finished` with the first build and the others, split so that
/// each payload stays under PostgreSQL's 8000-byte limit (each starting
/// with the first build).
pub fn build_finished_payloads(first: BuildId, others: &[BuildId]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = first.to_string();
    for id in others {
        let piece = format!("\t{id}");
        if current.len() + piece.len() > 7000 {
            payloads.push(std::mem::replace(&mut current, first.to_string()));
        }
        current.push_str(&piece);
    }
    payloads.push(current);
    payloads
}

/// `build_finished` for `first` and `others` (see
/// [`build_finished_payloads`]).
pub async fn build_finished(
    conn: &mut PgConnection,
    first: BuildId,
    others: &[BuildId],
) -> Result<(), sqlx::Error> {
    for payload in build_finished_payloads(first, others) {
        send(conn, "build_finished", &payload).await?;
    }
    Ok(())
}

/// `step_finished`: build, step number and the log's path (`-` without).
pub async fn step_finished(
    conn: &mut PgConnection,
    build: BuildId,
    stepnr: i32,
    log: Option<&str>,
) -> Result<(), sqlx::Error> {
    send(
        conn,
        "step_finished",
        &format!("{build}\t{stepnr}\t{}", log.unwrap_or("-")),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_finished_payloads_stay_under_the_limit() {
        assert_eq!(build_finished_payloads(BuildId(5), &[]), ["5"]);
        assert_eq!(
            build_finished_payloads(BuildId(5), &[BuildId(6), BuildId(7)]),
            ["5\t6\t7"]
        );
        let others: Vec<BuildId> = (1_000_000..1_003_000).map(BuildId).collect();
        let payloads = build_finished_payloads(BuildId(42), &others);
        assert!(payloads.len() > 1);
        let mut seen = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8000);
            let mut ids = p.split('\t');
            assert_eq!(ids.next(), Some("42"));
            seen.extend(ids.map(|i| BuildId(i.parse::<i32>().unwrap_or(0))));
        }
        assert_eq!(seen, others);
    }
}
