//! The ids the roles pass between them, as types: a build's id cannot be
//! given where an evaluation's or a jobset's is expected. Stored as
//! Hydra's `integer` columns; JSON shows them as numbers.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type, Serialize, Deserialize,
        )]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(pub i32);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// `Builds.id`.
    BuildId
);
id_type!(
    /// `JobsetEvals.id`.
    EvalId
);
id_type!(
    /// `Jobsets.id`.
    JobsetId
);

/// The raw numbers of `ids`, for binding as an `integer[]` where a query
/// mixes them with other columns.
pub fn numbers<T: Copy + Into<i32>>(ids: &[T]) -> Vec<i32> {
    ids.iter().map(|id| (*id).into()).collect()
}

impl From<BuildId> for i32 {
    fn from(id: BuildId) -> i32 {
        id.0
    }
}

impl From<EvalId> for i32 {
    fn from(id: EvalId) -> i32 {
        id.0
    }
}

impl From<JobsetId> for i32 {
    fn from(id: JobsetId) -> i32 {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_show_and_serialise_as_their_number() {
        assert_eq!(BuildId(7).to_string(), "7");
        assert_eq!(serde_json::to_string(&EvalId(3)).unwrap_or_default(), "3");
        assert_eq!(
            serde_json::from_str::<JobsetId>("5").ok(),
            Some(JobsetId(5))
        );
        assert_eq!(numbers(&[BuildId(1), BuildId(2)]), [1, 2]);
    }
}
