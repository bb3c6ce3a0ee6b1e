//! `EvaluationJournal`: the reports of an evaluation in progress, so that
//! an interrupted one carries on where it stopped.

use sqlx::PgPool;

use crate::ids::JobsetId;

/// An attribute path and what was reported for it.
pub type Entry = (Vec<String>, serde_json::Value);

/// The journal of `jobset`'s evaluation of the inputs `key`; reports kept
/// for other inputs are dropped.
pub async fn open(pool: &PgPool, jobset: JobsetId, key: &str) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query("delete from EvaluationJournal where jobset_id = $1 and key <> $2")
        .bind(jobset)
        .bind(key)
        .execute(pool)
        .await?;
    let rows: Vec<(String, serde_json::Value)> =
        sqlx::query_as("select path, report from EvaluationJournal where jobset_id = $1")
            .bind(jobset)
            .fetch_all(pool)
            .await?;
    // A path that does not read back is evaluated again.
    Ok(rows
        .into_iter()
        .filter_map(|(path, report)| Some((serde_json::from_str(&path).ok()?, report)))
        .collect())
}

/// Adds reports (a path reported again replaces its report).
pub async fn append(
    pool: &PgPool,
    jobset: JobsetId,
    key: &str,
    entries: &[Entry],
) -> Result<(), sqlx::Error> {
    // One row per path, the last report winning: a statement cannot
    // update a row twice.
    let mut last: std::collections::HashMap<String, &serde_json::Value> =
        std::collections::HashMap::with_capacity(entries.len());
    for (path, report) in entries {
        last.insert(serde_json::to_string(path).unwrap_or_default(), report);
    }
    let (paths, reports): (Vec<String>, Vec<serde_json::Value>) =
        last.into_iter().map(|(p, r)| (p, r.clone())).unzip();
    sqlx::query(
        "insert into EvaluationJournal (jobset_id, key, path, report) \
         select $1, $2, p, r from unnest($3::text[], $4::jsonb[]) as u(p, r) \
         on conflict (jobset_id, path) do update set key = excluded.key, report = excluded.report",
    )
    .bind(jobset)
    .bind(key)
    .bind(&paths)
    .bind(&reports)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets `jobset`'s journal (its evaluation ended).
pub async fn clear(pool: &PgPool, jobset: JobsetId) -> Result<(), sqlx::Error> {
    sqlx::query("delete from EvaluationJournal where jobset_id = $1")
        .bind(jobset)
        .execute(pool)
        .await?;
    Ok(())
}
