//! `JobsetErrorMails`: an evaluation error is mailed once, however many
//! handlers report it at the same time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hydra_db::build_reports::claim_error_mail;
use hydra_db::ids::JobsetId;
use hydra_test_support::TestDb;
use hydra_test_support::jobsets::{create_jobset, create_project};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_of_one_error_claim_one_mail() {
    let db = TestDb::new().await;
    create_project(&db.pool, "p").await;
    let jobset = JobsetId(create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await);

    for round in 0..5 {
        let message = format!("error number {round}");
        let claims = futures_util::future::join_all(
            (0..8).map(|_| claim_error_mail(&db.pool, jobset, &message, 100 + round)),
        )
        .await;
        let won = claims
            .into_iter()
            .map(Result::unwrap)
            .filter(Option::is_some)
            .count();
        assert_eq!(won, 1, "round {round}: one of 8 concurrent reports mails");
    }
    assert!(
        claim_error_mail(&db.pool, jobset, "error number 4", 200)
            .await
            .unwrap()
            .is_none(),
        "the same error again is not mailed"
    );
}

#[tokio::test]
async fn a_mail_that_was_not_sent_gives_its_claim_back() {
    let db = TestDb::new().await;
    create_project(&db.pool, "p").await;
    let jobset = JobsetId(create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await);

    // The first error ever, unsent: mailed on its next report.
    let first = claim_error_mail(&db.pool, jobset, "a", 1).await.unwrap();
    first.unwrap().release(&db.pool).await.unwrap();
    let again = claim_error_mail(&db.pool, jobset, "a", 2).await.unwrap();
    assert!(again.is_some(), "released, so claimed again");

    // A later error, unsent: the earlier one stays recorded as mailed.
    let later = claim_error_mail(&db.pool, jobset, "b", 3).await.unwrap();
    later.unwrap().release(&db.pool).await.unwrap();
    assert!(
        claim_error_mail(&db.pool, jobset, "a", 4)
            .await
            .unwrap()
            .is_none(),
        "a was mailed and is recorded again"
    );
    assert!(
        claim_error_mail(&db.pool, jobset, "b", 5)
            .await
            .unwrap()
            .is_some()
    );
}
