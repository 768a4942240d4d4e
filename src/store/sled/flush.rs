//! Group commit: writers hand their epoch to one flusher thread and wait; one sled flush makes every
//! write before it durable, so 64 concurrent writers share flushes instead of queueing 64 fsyncs.
//! Changes are published to watchers only once durable, in commit order.
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::fault::ack_before_flush;
use crate::store::StoreError;

struct State<E> {
    written: u64,
    requested: u64,
    pending: VecDeque<(u64, E)>,
    failed: Option<crate::store::fault::VolumeFault>,
    stop: bool,
}

struct Shared<E> {
    db: sled::Db,
    state: Mutex<State<E>>,
    wake: Condvar,
    durable: watch::Sender<u64>,
    publish: Box<dyn Fn(E) + Send + Sync>,
    /// The watchdog of the flush (and of the write) under way.
    flushing: Arc<Watchdog>,
}

impl<E> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, State<E>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The flusher thread and the handle writers use.
pub(crate) struct Flusher<E: Send + 'static> {
    shared: Arc<Shared<E>>,
    thread: Option<JoinHandle<()>>,
    watchdog: Option<JoinHandle<()>>,
}

impl<E: Send + 'static> Flusher<E> {
    /// Starts the flusher thread for `db` (whose files are in `volume`) and its watchdog;
    /// `publish` receives each change once it is durable.
    pub(crate) fn start(
        db: sled::Db,
        volume: PathBuf,
        publish: Box<dyn Fn(E) + Send + Sync>,
    ) -> std::io::Result<Self> {
        let flushing = Arc::new(Watchdog::default());
        let shared = Arc::new(Shared {
            db,
            state: Mutex::new(State {
                written: 0,
                requested: 0,
                pending: VecDeque::new(),
                failed: None,
                stop: false,
            }),
            wake: Condvar::new(),
            durable: watch::channel(0).0,
            publish,
            flushing: Arc::clone(&flushing),
        });
        if ack_before_flush() {
            tracing::warn!("FAULT INJECTION: writes are acknowledged before they are on disk (REGISTRY_FAULT_ACK_BEFORE_FLUSH=1, debug builds only)");
        }
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sled-flusher".into())
            .spawn(move || run(&worker))?;
        let mut flusher = Self {
            shared,
            thread: Some(thread),
            watchdog: None,
        };
        // Should this fail, dropping `flusher` stops its thread.
        flusher.watchdog = Some(
            std::thread::Builder::new()
                .name("flush-watchdog".into())
                .spawn(move || flushing.watch(&volume))?,
        );
        Ok(flusher)
    }

    /// Records that a write has been applied (call it while still holding the write lock, so epochs
    /// follow commit order) with the changes to publish once it is durable; returns its epoch.
    pub(crate) fn committed<C: Into<E>>(&self, changes: impl IntoIterator<Item = C>) -> u64 {
        let mut st = self.shared.lock();
        st.written += 1;
        let epoch = st.written;
        st.pending
            .extend(changes.into_iter().map(|c| (epoch, c.into())));
        epoch
    }

    /// Runs `write` (a write applied under the write lock) with the watchdog on it, until it
    /// returns or panics.
    pub(crate) fn watched<T>(&self, write: impl FnOnce() -> T) -> T {
        struct Ends<'a>(&'a Watchdog);
        impl Drop for Ends<'_> {
            fn drop(&mut self) {
                self.0.began(Watched::Write, None);
            }
        }
        self.shared
            .flushing
            .began(Watched::Write, Some(Instant::now()));
        let _ends = Ends(&self.shared.flushing);
        write()
    }

    /// The newest epoch applied so far (a reader waits for it to see only durable state).
    pub(crate) fn written(&self) -> u64 {
        self.shared.lock().written
    }

    /// Waits until the write of `epoch` is on disk.
    pub(crate) async fn wait(&self, epoch: u64) -> Result<(), StoreError> {
        if ack_before_flush() {
            return Ok(());
        }
        // After a failed flush (or any fault of the volume) nothing more becomes durable:
        // answer at once.
        if let Some(fault) = self
            .shared
            .lock()
            .failed
            .clone()
            .or_else(crate::store::fault::current)
        {
            return Err(StoreError::Volume(fault));
        }
        let mut rx = self.shared.durable.subscribe();
        if *rx.borrow_and_update() < epoch {
            {
                let mut st = self.shared.lock();
                if st.requested < epoch {
                    st.requested = epoch;
                    self.shared.wake.notify_one();
                }
            }
            // A flush after a fault may never return (sled stops on its first I/O error): the
            // fault answers the waiters instead.
            tokio::select! {
                durable = rx.wait_for(|d| *d >= epoch) => {
                    durable.map_err(|_| StoreError::Storage("the store is closed".into()))?;
                }
                fault = crate::store::fault::raised() => return Err(StoreError::Volume(fault)),
            }
        }
        if let Some(fault) = self.shared.lock().failed.clone() {
            return Err(StoreError::Volume(fault));
        }
        Ok(())
    }
}

impl<E: Send + 'static> Drop for Flusher<E> {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        self.shared.flushing.stop();
        if let Some(t) = self.watchdog.take() {
            let _ = t.join();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long the flusher waits for more writers to commit before a flush, and at most in all.
const GATHER_STEP: std::time::Duration = std::time::Duration::from_micros(100);
const GATHER_MAX: std::time::Duration = std::time::Duration::from_millis(1);

fn run<E>(shared: &Shared<E>) {
    loop {
        let target = {
            let mut st = shared.lock();
            while st.requested <= *shared.durable.borrow() && !st.stop {
                if ack_before_flush() {
                    // The broken build flushes on its own, every 100 ms.
                    st = shared
                        .wake
                        .wait_timeout(st, std::time::Duration::from_millis(100))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    st.requested = st.written;
                    continue;
                }
                st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            // Other writers are between their commit and their wait: let them join this flush
            // while they keep coming (each step a fraction of a flush), so that one flush makes
            // many writes durable instead of two or three.
            let deadline = Instant::now() + GATHER_MAX;
            while !st.stop && st.written > *shared.durable.borrow() + 1 && Instant::now() < deadline
            {
                let seen = st.written;
                drop(st);
                std::thread::sleep(GATHER_STEP);
                st = shared.lock();
                if st.written == seen {
                    break;
                }
            }
            // Every write committed so far was applied before this flush starts: all become durable.
            st.written
        };
        let started = Instant::now();
        // After a failed flush sled refuses (or hangs) on every later one: do not try again,
        // wake the waiters with the fault.
        let failed_before = shared.lock().failed.is_some();
        let result = if failed_before {
            Ok(0)
        } else {
            shared.flushing.began(Watched::Flush, Some(started));
            let flushed = shared.db.flush();
            shared.flushing.began(Watched::Flush, None);
            flushed
        };
        let ready: Vec<E> = {
            let mut st = shared.lock();
            if let Err(e) = &result {
                let fault = match e {
                    sled::Error::Io(io) => crate::store::fault::VolumeFault::of(io),
                    other => crate::store::fault::VolumeFault {
                        no_space: false,
                        detail: other.to_string(),
                    },
                };
                tracing::error!(fault = %fault, "flush to disk failed; refusing further writes");
                crate::store::fault::raise(&fault);
                st.failed = Some(fault);
            }
            let mut ready = Vec::new();
            while st.pending.front().is_some_and(|(e, _)| *e <= target) {
                if let Some((_, c)) = st.pending.pop_front() {
                    ready.push(c);
                }
            }
            ready
        };
        crate::metrics::record_flush(started.elapsed().as_secs_f64());
        tracing::trace!(
            epoch = target,
            micros = started.elapsed().as_micros() as u64,
            "flushed"
        );
        if result.is_ok() && !failed_before {
            for change in ready {
                (shared.publish)(change);
            }
        }
        shared.durable.send_replace(target);
        if shared.lock().stop {
            return;
        }
    }
}

/// A flush (or a write) that has not returned for this long on a volume with less than
/// [`LOW_SPACE`] free is taken for a full volume. sled 0.34 can wait for good for a log write that
/// failed: its flush then holds a lock that every later write, and every read queued behind that
/// write, waits for.
const STUCK_WHEN_FULL: Duration = Duration::from_secs(2);
/// Less free space than this (two of sled's log segments) is a full volume to the watchdog.
const LOW_SPACE: u64 = 1024 * 1024;
/// A flush (or a write) that has not returned for this long is a fault of the volume, whatever
/// its space.
const STUCK: Duration = Duration::from_secs(30);

/// What the watchdog watches: sled's flush, and a write applied under the write lock.
#[derive(Clone, Copy)]
enum Watched {
    Flush = 0,
    Write = 1,
}

/// Watches the flush and the write under way: one that hangs raises the volume's fault, so the
/// server answers in words and fail-stops instead of hanging with it.
#[derive(Default)]
struct Watchdog {
    /// When the flush and the write under way began, and whether to stop.
    state: Mutex<([Option<Instant>; 2], bool)>,
    wake: Condvar,
}

impl Watchdog {
    fn lock(&self) -> MutexGuard<'_, ([Option<Instant>; 2], bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn began(&self, what: Watched, at: Option<Instant>) {
        self.lock().0[what as usize] = at;
    }

    fn stop(&self) {
        self.lock().1 = true;
        self.wake.notify_all();
    }

    fn watch(&self, volume: &std::path::Path) {
        loop {
            let oldest = {
                let st = self.lock();
                let st = self
                    .wake
                    .wait_timeout(st, Duration::from_millis(250))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                if st.1 {
                    return;
                }
                st.0.iter().flatten().min().copied()
            };
            let Some(started) = oldest else {
                continue;
            };
            let stuck = started.elapsed();
            // Free to root (sled writes until then), not only to other users.
            let free = || fs2::free_space(volume).ok();
            let Some(fault) = verdict(stuck, free) else {
                continue;
            };
            tracing::error!(fault = %fault, stuck_ms = stuck.as_millis() as u64, "a flush or a write to disk hangs");
            crate::store::fault::raise(&fault);
            return;
        }
    }
}

/// What a flush stuck for `stuck` means, given the volume's free bytes (asked only when needed).
fn verdict(
    stuck: Duration,
    free: impl FnOnce() -> Option<u64>,
) -> Option<crate::store::fault::VolumeFault> {
    if stuck < STUCK_WHEN_FULL {
        return None;
    }
    if free().is_some_and(|free| free < LOW_SPACE) {
        return Some(crate::store::fault::VolumeFault {
            no_space: true,
            detail: "a flush cannot finish on the full volume".into(),
        });
    }
    (stuck >= STUCK).then(|| crate::store::fault::VolumeFault {
        no_space: false,
        detail: format!(
            "a flush or a write to disk has not finished in {} s",
            STUCK.as_secs()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_flush_is_a_fault_soon_on_a_full_volume_and_late_on_any() {
        let secs = Duration::from_secs;
        let asked = &std::cell::Cell::new(0);
        let free = |bytes: u64| {
            move || {
                asked.set(asked.get() + 1);
                Some(bytes)
            }
        };
        // A short flush is no fault, and the volume is not even asked.
        assert_eq!(verdict(secs(1), free(0)), None);
        assert_eq!(asked.get(), 0);
        // Stuck on a full volume: no space, after 2 s.
        let full = verdict(secs(2), free(LOW_SPACE - 1)).unwrap();
        assert!(full.no_space);
        assert_eq!(full.to_string(), "no space left on the data volume");
        // Stuck with space left: a fault only after 30 s.
        assert_eq!(verdict(secs(29), free(LOW_SPACE)), None);
        assert_eq!(verdict(secs(29), || None), None);
        let hung = verdict(STUCK, free(1 << 40)).unwrap();
        assert!(!hung.no_space);
        assert!(
            hung.to_string().contains("has not finished in 30 s"),
            "{hung}"
        );
    }
}
