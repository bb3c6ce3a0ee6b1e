-- What an evaluation in progress has found so far, attribute path by
-- attribute path, written as the evaluation workers report: an evaluator
-- that is restarted or killed carries on from it instead of evaluating
-- everything again. `key` names the inputs the reports belong to (the
-- evaluation's inputs hash); reports under another key are stale. The
-- rows of a jobset go when its evaluation ends.
create table EvaluationJournal (
    jobset_id integer not null,
    key       text not null,
    -- The attribute path, as a JSON list of its components.
    path      text not null,
    report    jsonb not null,
    primary key (jobset_id, path),
    foreign key (jobset_id) references Jobsets(id) on delete cascade
);
