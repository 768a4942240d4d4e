-- profile-registry schema, version 3: the SDK's other kinds (provider connections, meta-profiles,
-- agent profiles), each the JSON object of its file with secret values sealed, by kind and name.
-- References between kinds are checked by the server in the writing transaction, under the write
-- lock (as bindings are), so a dangling reference found in an imported home can be kept.
CREATE TABLE documents (
    kind     text COLLATE "C" NOT NULL,
    name     text COLLATE "C" NOT NULL,
    seq      bigint NOT NULL,
    revision bigint NOT NULL CHECK (revision >= 1),
    record   bytea  NOT NULL,
    PRIMARY KEY (kind, name)
);
