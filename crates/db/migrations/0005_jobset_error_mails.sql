-- The last evaluation error mailed to each jobset's project owner: the
-- mail goes out when the jobset's error changes, not on every failed
-- evaluation.
create table JobsetErrorMails (
    jobset_id integer primary key not null,
    errorMsg  text not null,
    sentAt    integer not null,
    foreign key (jobset_id) references Jobsets(id) on delete cascade
);
