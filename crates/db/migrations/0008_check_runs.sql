-- GitHub check runs go through the commit-status outbox too: a check run
-- is created once and then updated in place, so its row remembers the id
-- GitHub gave it.
alter table CommitStatuses add column remoteId bigint;
