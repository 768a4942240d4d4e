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

-- Deleted profiles whose history is kept for an undelete, until --deleted-retention passes (or a
-- purge, or a new profile of that name): the revision it had, when and by whom (`record`, JSON).
CREATE TABLE deleted_profiles (
    name           text COLLATE "C" PRIMARY KEY,
    revision       bigint NOT NULL,
    delete_seconds bigint NOT NULL,
    record         bytea  NOT NULL
);
CREATE INDEX deleted_profiles_time ON deleted_profiles (delete_seconds);
