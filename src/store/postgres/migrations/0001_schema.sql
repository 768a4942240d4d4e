-- profile-registry schema, version 1. Records are the same JSON as in sled, with every secret value
-- sealed (AES-256-GCM) by the server before it is sent: the database never sees a plaintext key.
-- Names compare byte-wise (COLLATE "C"), like sled's keys, so listings page identically.

-- The store-wide change counter: profile changes take their seq from it inside the transaction
-- that holds the write lock, so seq order is commit order on every replica.
CREATE TABLE registry_counter (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    next_seq bigint  NOT NULL CHECK (next_seq >= 1)
);
INSERT INTO registry_counter (id, next_seq) VALUES (true, 1);

CREATE TABLE profiles (
    name     text COLLATE "C" PRIMARY KEY,
    seq      bigint NOT NULL,
    revision bigint NOT NULL CHECK (revision >= 1),
    record   bytea  NOT NULL
);

-- Every profile change in seq order, read by each replica after a notification to feed its
-- watchers and its cache. `record` is NULL for a deletion. Old rows are pruned.
CREATE TABLE profile_changes (
    seq         bigint PRIMARY KEY,
    name        text COLLATE "C" NOT NULL,
    revision    bigint NOT NULL,
    record      bytea,
    change_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profile_changes_time ON profile_changes (change_time);

CREATE TABLE conversations (
    id               uuid PRIMARY KEY,
    execution_status text   NOT NULL,
    event_count      bigint NOT NULL CHECK (event_count >= 0),
    record           bytea  NOT NULL
);

-- Which conversations are bound to which profile name. No foreign key to profiles on purpose: a
-- profile deleted with force leaves its bindings, which resolve again if the name is re-created;
-- every other write checks the profiles exist in the same transaction, under the write lock.
CREATE TABLE bindings (
    profile      text COLLATE "C" NOT NULL,
    conversation uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    PRIMARY KEY (profile, conversation)
);
CREATE INDEX bindings_conversation ON bindings (conversation);

CREATE TABLE events (
    conversation uuid   NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq          bigint NOT NULL CHECK (seq >= 0),
    kind         text   NOT NULL,
    source       text   NOT NULL,
    record       bytea  NOT NULL,
    PRIMARY KEY (conversation, seq)
);
