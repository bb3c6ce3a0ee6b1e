-- OpenID Connect sign-ins under way: the state sent to the provider, and
-- what its answer must match (nonce, PKCE verifier), for ten minutes.
-- A state is taken (deleted) by the first answer that names it, so an
-- answer cannot be replayed.
create table OidcLogins (
    state    text primary key not null,
    provider text not null,
    nonce    text not null,
    verifier text not null,
    -- Where the browser goes once signed in (a path of this site).
    after    text not null,
    expires  integer not null
);
