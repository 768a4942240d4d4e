-- profile-registry schema, version 4: each profile's kept revisions, newest first by revision,
-- the current one included: the same sealed records as `profiles`, at most --history-revisions
-- per name (older ones are deleted in the transaction that writes a new one). A rename moves a
-- profile's revisions to the new name; a delete drops them.
CREATE TABLE profile_history (
    name     text COLLATE "C" NOT NULL,
    revision bigint NOT NULL CHECK (revision >= 1),
    seq      bigint NOT NULL,
    record   bytea  NOT NULL,
    PRIMARY KEY (name, revision)
);
