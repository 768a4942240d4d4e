-- profile-registry schema, version 5: where the kept profile changes begin. `profile_changes` is
-- pruned to --watch-history; `pruned_through` is the highest seq that may be missing from it, so a
-- watch resuming after an older seq is told to start over (OUT_OF_RANGE) instead of missing
-- changes. Seqs are shared with other records, so a gap in `profile_changes` alone proves nothing.
CREATE TABLE watch_horizon (
    only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    pruned_through bigint  NOT NULL
);
-- Rows older than the first kept change may have been pruned already.
INSERT INTO watch_horizon (pruned_through)
SELECT COALESCE((SELECT min(seq) - 1 FROM profile_changes), (SELECT next_seq - 1 FROM registry_counter));
