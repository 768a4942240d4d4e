-- profile-registry schema, version 2: a value sealed with the keys of the first server, so a replica
-- started with other keys refuses to start instead of writing secrets the others cannot open.
CREATE TABLE registry_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
