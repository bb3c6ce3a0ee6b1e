-- A build page lists the builds that took it as an input: the evaluations
-- whose input was fixed to it. Without this index that is a scan of every
-- evaluation's inputs.
create index IndexJobsetEvalInputsOnDependency on JobsetEvalInputs(dependency)
    where dependency is not null;
