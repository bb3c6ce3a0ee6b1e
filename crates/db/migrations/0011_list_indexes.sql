-- Indexes that read the lists of finished builds and steps page by page
-- from where the previous page ended (`?after=`), however deep the page:
-- all finished builds by finish time; those of a jobset, and of a job,
-- the same way (a project's list merges its jobsets'); finished steps by
-- finish time.
create index IndexBuildsFinishedByStopTime on Builds(stopTime desc, id desc) where finished = 1;
create index IndexBuildsJobsetFinishedByStopTime on Builds(jobset_id, stopTime desc, id desc) where finished = 1;
create index IndexBuildsJobFinishedByStopTime on Builds(jobset_id, job, stopTime desc, id desc) where finished = 1;
create index IndexBuildStepsFinishedByStopTime on BuildSteps(stopTime desc, build desc, stepnr desc)
    where busy = 0 and stopTime is not null;
