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

-- Whoever deletes change rows raises the horizon past them (the pruning of every replica, of this
-- version or an older one, a restore, a purge): a resume never passes over a deleted row unawares.
CREATE FUNCTION raise_watch_horizon() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE watch_horizon SET pruned_through = GREATEST(pruned_through, (SELECT max(seq) FROM gone))
    WHERE EXISTS (SELECT 1 FROM gone);
    RETURN NULL;
END
$$;
CREATE TRIGGER profile_changes_pruned AFTER DELETE ON profile_changes
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE PROCEDURE raise_watch_horizon();
