-- Commit statuses go through an outbox: each row is the state one forge
-- should show for one revision under one context (the desired state), and
-- what was delivered of it. The notify role's plugins write the desired
-- state; its reporter converges the forge on it. A state overtaken before
-- it was sent is never sent; a state sent is not sent again.
create table CommitStatuses (
    id           serial primary key not null,
    -- github, gitlab, gitea or bitbucket.
    forge        text not null,
    -- Where the status is POSTed (forge, repository and revision).
    url          text not null,
    -- The status's name on the forge (GitHub's and Gitea's context,
    -- GitLab's name, Bitbucket's key).
    context      text not null,
    -- Which configured credential signs it: the owner (GitHub, Gitea), the
    -- project id (GitLab); empty for Bitbucket's single account.
    credential   text not null,
    -- project:jobset:job, or project:jobset for an evaluation's status.
    job          text not null,
    build        integer,
    eval         integer,
    -- The desired state, in the forge's words, and the document to send.
    state        text not null,
    body         text not null,
    -- Bumped whenever state or body change; sentVersion is the version
    -- the forge has.
    version      integer not null default 1,
    sentVersion  integer,
    sentAt       integer,
    -- Failed deliveries of the current version, when to try next (also
    -- the lease of a delivery in flight), and the last failure.
    attempts     integer not null default 0,
    nextAttempt  integer not null,
    lastError    text,
    -- Given up (a refusal such as 401 or 404, or too many failures); the
    -- admin can try again.
    dropped      boolean not null default false,
    createdAt    integer not null,
    updatedAt    integer not null,
    foreign key (build) references Builds(id) on delete cascade,
    foreign key (eval) references JobsetEvals(id) on delete cascade,
    constraint CommitStatuses_one_per_context unique (url, context)
);
create index IndexCommitStatusesDue on CommitStatuses(nextAttempt)
    where sentVersion is distinct from version and not dropped;
create index IndexCommitStatusesOnBuild on CommitStatuses(build);
create index IndexCommitStatusesOnEval on CommitStatuses(eval);

-- Notification tasks given up after too many failures (Hydra deletes
-- them): kept so that the build page shows them and the admin can try
-- them again.
create table DroppedTasks (
    id         serial primary key not null,
    channel    text not null,
    pluginname text not null,
    payload    text not null,
    attempts   integer not null,
    droppedAt  integer not null,
    lastError  text not null,
    -- The build the event is about, when it is about one.
    build      integer,
    foreign key (build) references Builds(id) on delete cascade
);
create index IndexDroppedTasksOnBuild on DroppedTasks(build);
