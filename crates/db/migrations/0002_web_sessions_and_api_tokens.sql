-- Web sessions, shared by every server process, and per-user API tokens.
-- Both store a SHA-256 of the secret, never the secret itself.

create table WebSessions (
    id        text primary key not null, -- hex SHA-256 of the cookie value
    userName  text not null,
    created   integer not null,
    expires   integer not null,
    foreign key (userName) references Users(userName) on delete cascade on update cascade
);
create index IndexWebSessionsOnExpires on WebSessions(expires);
create index IndexWebSessionsOnUserName on WebSessions(userName);

create table ApiTokens (
    id        serial primary key not null,
    userName  text not null,
    name      text not null,
    hash      text not null unique, -- hex SHA-256 of the token
    created   integer not null,
    lastUsed  integer,
    foreign key (userName) references Users(userName) on delete cascade on update cascade
);
create index IndexApiTokensOnUserName on ApiTokens(userName);
