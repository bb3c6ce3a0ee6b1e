-- What the queue runner predicted of queued builds: when each would
-- finish (`finishAt`), with the range it expected (`low`, `high`), made
-- at `madeAt`. A row is written when a build is first predicted and when
-- its prediction moves; the outcome is the build's `stopTime`, so the
-- error of every prediction can be measured afterwards.
create table BuildEtas (
    build    integer not null,
    madeAt   integer not null,
    finishAt integer not null,
    low      integer not null,
    high     integer not null,
    primary key (build, madeAt),
    foreign key (build) references Builds(id) on delete cascade
);
