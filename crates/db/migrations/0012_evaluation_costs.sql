-- What an evaluation cost, from its workers' reports: per top-level
-- attribute (`kind` 'attrset') the workers' time, the jobs found and the
-- highest resident memory of a worker while reporting them; and the
-- slowest jobs (`kind` 'job'). Evaluations resumed from a journal count
-- only what they evaluated themselves.
create table EvaluationCosts (
    eval         integer not null,
    kind         text not null check (kind in ('attrset', 'job')),
    name         text not null,
    milliseconds bigint not null,
    jobs         integer not null,
    peakMemory   bigint not null,
    primary key (eval, kind, name),
    foreign key (eval) references JobsetEvals(id) on delete cascade
);
