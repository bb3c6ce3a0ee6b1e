-- Pull requests built as jobsets without a generator, and what happens to
-- work that a newer evaluation supersedes.

-- A project that builds the pull requests of one forge repository: each
-- open pull request gets a jobset copied from `template`, with `input`
-- (the template's input that holds the repository; null for a flake
-- jobset, whose flake URI is rewritten) pointed at the pull request's head.
create table ProjectPullRequests (
    project     text primary key not null,
    -- github, gitea or gitlab
    forge       text not null check (forge in ('github', 'gitea', 'gitlab')),
    -- owner/name (GitLab: the project's path with its namespace)
    repository  text not null,
    -- The forge's API base; null for GitHub means github_api_url.
    apiUrl      text,
    template    text not null,
    input       text,
    -- Space-separated logins whose pull requests are built without an
    -- approval, and the GitHub author associations trusted the same way.
    trustedAuthors      text not null default '',
    trustedAssociations text not null default 'OWNER MEMBER COLLABORATOR',
    foreign key (project) references Projects(name) on delete cascade on update cascade
);

-- What a project does with queued builds that only a superseded
-- evaluation wanted: keep (Hydra's behaviour), cancel, or lower their
-- priority.
create table ProjectSupersededPolicy (
    project text primary key not null,
    policy  text not null check (policy in ('keep', 'cancel', 'lower')),
    foreign key (project) references Projects(name) on delete cascade on update cascade
);

-- The forge's view of each pull request, as last heard (webhook or
-- reconcile), and what the jobset was last made to match.
create table PullRequests (
    project     text not null,
    number      integer not null,
    title       text not null,
    author      text not null,
    -- GitHub's author_association (null on the other forges).
    association text,
    state       text not null check (state in ('open', 'closed')),
    headSha     text not null,
    -- The ref the base repository serves the head under.
    headRef     text not null,
    cloneUrl    text not null,
    fork        boolean not null,
    defaultBranch text,
    -- The forge's updated_at (seconds): an older delivery is ignored.
    updatedAt   integer not null,
    -- An approval holds for one head: a new push needs a new one.
    approvedSha text,
    approvedBy  text,
    approvedAt  integer,
    -- Whether the author was trusted when the jobset was last updated.
    trusted     boolean not null default false,
    -- The jobset and the (state, head, approval) it was last made to match.
    jobset_id   integer,
    syncedKey   text,
    primary key (project, number),
    foreign key (project) references Projects(name) on delete cascade on update cascade,
    foreign key (jobset_id) references Jobsets(id) on delete set null,
    foreign key (approvedBy) references Users(userName) on delete set null on update cascade
);

-- Why a build was cancelled by the system rather than by a person.
create table BuildCancellations (
    build_id integer primary key not null,
    -- superseded, or closed (its pull request was closed)
    reason   text not null,
    -- The evaluation that superseded it.
    eval_id  integer,
    at       integer not null,
    foreign key (build_id) references Builds(id) on delete cascade
);
