-- What an evaluation fetched, written as soon as its inputs are fetched
-- (before it is evaluated, and whether or not it is then recorded), so
-- that an evaluation-level commit status can say "pending" and "error"
-- on the right revision. Rows older than a day are pruned.
create table JobsetCheckouts (
    traceId   text primary key not null,
    jobset_id integer not null,
    -- The locked flake, for a flake jobset.
    flake     text,
    -- [{name, type, uri, revision, value}]
    inputs    jsonb not null,
    createdAt integer not null,
    foreign key (jobset_id) references Jobsets(id) on delete cascade
);
create index IndexJobsetCheckoutsOnJobset on JobsetCheckouts(jobset_id, createdAt);
