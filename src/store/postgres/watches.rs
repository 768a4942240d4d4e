//! Watches on PostgreSQL: a snapshot read in one transaction with the counter, or a resume that
//! reads `profile_changes` after the client's seq; then the changes this replica's listener reads.
//! The seq is the database's, so it names the same change on every replica, and a watch may
//! resume on another replica than the one it left.
use std::sync::atomic::Ordering;

use super::listener::changes_after;
use super::rows::Run;
use super::{rows, store_error, PgStore};
use crate::store::records::or_skip;
use crate::store::{too_new, too_old, ProfileWatch, StoreError, WatchHistory};

impl PgStore {
    pub(crate) async fn watch_profiles(
        &self,
        snapshot: bool,
        after: Option<u64>,
    ) -> Result<ProfileWatch, StoreError> {
        let changes = self.changes.subscribe();
        let start = self.published.load(Ordering::SeqCst);
        let mut watch = ProfileWatch {
            snapshot: Vec::new(),
            replay: Vec::new(),
            covered: 0,
            start,
            changes,
        };
        if let Some(after) = after {
            self.resume(after, &mut watch).await?;
        } else if snapshot {
            self.snapshot_into(&mut watch).await?;
        } else {
            // A live watch begins at the counter: a change committed before it is not sent, even
            // when this replica's listener reads it only afterwards.
            let next = rows::next_seq(&self.pool).await?;
            watch.covered = next;
            watch.start = watch.start.max(next - 1);
        }
        Ok(watch)
    }

    /// The kept changes after `after`, read from the database (so a replica whose listener is
    /// behind still resumes a seq another replica sent); later ones come through the listener.
    async fn resume(&self, after: u64, watch: &mut ProfileWatch) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        let last = rows::next_seq(&mut *conn).await?.saturating_sub(1);
        if after > last {
            return Err(too_new(after, last));
        }
        let rows = changes_after(&mut *conn, after, usize::MAX).await?;
        // Read after the rows: a pruning that raced them has raised it already. What the next
        // pruning would take counts as taken, so the answer does not depend on its timing.
        let due = match self.watch_history {
            WatchHistory::Changes(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                let gone = rows.len().checked_sub(n).and_then(|k| k.checked_sub(1));
                gone.map_or(0, |i| rows[i].0)
            }
            WatchHistory::Age(age) => {
                let newest_old: Option<i64> = sqlx::query_scalar(
                    "SELECT max(seq) FROM profile_changes WHERE seq > $1 \
                     AND change_time < now() - make_interval(secs => $2)",
                )
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(age.as_secs_f64())
                .fetch_one(&mut *conn)
                .await
                .map_err(store_error)?;
                newest_old.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)
            }
        };
        let horizon = rows::watch_horizon(&mut *conn).await?.max(due);
        if after < horizon {
            return Err(too_old(after, horizon));
        }
        let newest = rows.last().map_or(after, |r| r.0);
        for (seq, name, revision, record) in rows {
            let change = self
                .codec
                .decode_change(seq, &name, revision, record.as_deref());
            watch.replay.extend(change);
        }
        // Seqs are taken in commit order: every change the read missed comes after `newest`.
        watch.covered = newest + 1;
        watch.start = watch.start.max(newest);
        Ok(())
    }

    /// One consistent read of the profiles and the counter: every change below `covered` is in it.
    async fn snapshot_into(&self, watch: &mut ProfileWatch) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .run(&mut *tx)
            .await?;
        let covered = rows::next_seq(&mut *tx).await?;
        let rows: Vec<(String, i64, Vec<u8>)> =
            sqlx::query_as("SELECT name, seq, record FROM profiles ORDER BY name")
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        watch.snapshot.reserve(rows.len());
        for (name, seq, bytes) in rows {
            let read = self.codec.decode_profile(name.as_bytes(), &bytes);
            let seq = u64::try_from(seq).unwrap_or(0);
            let kept = or_skip(read, "profile record").map(|r| (seq, r.profile));
            watch.snapshot.extend(kept);
        }
        watch.covered = covered;
        Ok(())
    }

    /// Deletes the change rows `--watch-history` no longer keeps and raises the horizon, in one
    /// statement; returns how many went. Every replica may run it.
    pub(crate) async fn prune_changes(&self) -> Result<usize, StoreError> {
        // Rows beyond the newest `n`, or older than `age` (in seconds); the table's trigger
        // raises the horizon past the rows deleted.
        let query = match self.watch_history {
            WatchHistory::Changes(n) => sqlx::query_scalar::<_, i64>(
                "WITH gone AS (DELETE FROM profile_changes WHERE seq <= (SELECT seq FROM profile_changes \
                 ORDER BY seq DESC OFFSET $1 LIMIT 1) RETURNING seq) SELECT count(*) FROM gone",
            )
            .bind(i64::try_from(n).unwrap_or(i64::MAX)),
            WatchHistory::Age(age) => sqlx::query_scalar::<_, i64>(
                "WITH gone AS (DELETE FROM profile_changes WHERE change_time < now() - \
                 make_interval(secs => $1) RETURNING seq) SELECT count(*) FROM gone",
            )
            .bind(age.as_secs_f64()),
        };
        let gone = query.fetch_one(&self.pool).await.map_err(store_error)?;
        Ok(usize::try_from(gone).unwrap_or(0))
    }
}
