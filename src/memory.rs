//! Hands the allocator's free memory back to the OS.
//!
//! glibc's malloc keeps what a burst freed (an import, a page of events, a batch of writes) in
//! its arenas, spread over pages that also hold live data, and gives back only the top of each
//! heap: after loading the benchmark's data set the server held about 250 MiB of RSS for about
//! 80 MiB of live heap. `malloc_trim(0)` releases every whole free page inside the arenas too.
//! A thread looks at the RSS every `interval` and trims when it has grown by [`GROWTH`] above the
//! lowest it was since the last trim, so a steady load that reuses its memory costs one read of
//! `/proc/self/statm` a tick; and, without growth, every [`SWEEP`], for what sled sets aside.
use std::time::{Duration, Instant};

/// How much the RSS must have grown since the last trim before the next one.
const GROWTH: u64 = 4 * 1024 * 1024;

/// How often a trim runs even when the RSS has not grown: garbage sled set aside on a thread
/// reaches the shared queue it can be freed from when that thread exits (tokio's idle blocking
/// threads, after 10 s), and nothing else would free it on an idle server.
const SWEEP: Duration = Duration::from_secs(30);

/// Starts the trimming thread (`interval` zero: none), once per process: a second server in the
/// same process (as in tests) shares the first one's. Only on Linux with glibc; elsewhere a no-op.
/// `release` runs first on each trim: it frees what the store holds for later (see
/// [`crate::store::sled::release_deferred`]).
pub fn spawn_trimmer(interval: Duration, release: fn()) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    if interval.is_zero() || resident_bytes().is_none() || !cfg!(target_env = "gnu") {
        return;
    }
    STARTED.call_once(|| start(interval, release));
}

fn start(interval: Duration, release: fn()) {
    let spawned = std::thread::Builder::new()
        .name("memory-trim".into())
        .spawn(move || {
            let (mut floor, mut last) = (0_u64, Instant::now());
            loop {
                std::thread::sleep(interval);
                let Some(before) = resident_bytes() else {
                    return;
                };
                floor = floor.min(before);
                if before < floor.saturating_add(GROWTH) && last.elapsed() < SWEEP {
                    continue;
                }
                let started = Instant::now();
                release();
                trim();
                let after = resident_bytes().unwrap_or(before);
                (floor, last) = (after, Instant::now());
                tracing::debug!(
                    before_mib = before >> 20,
                    after_mib = after >> 20,
                    took_us = started.elapsed().as_micros() as u64,
                    "returned free memory to the OS"
                );
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the memory-trim thread; free memory stays with the allocator");
    }
}

/// The process's resident set size, from `/proc/self/statm` (None where there is no procfs).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes the arenas' own locks; it frees no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_size_is_read_and_a_trim_gives_freed_pages_back() {
        let Some(start) = resident_bytes() else {
            eprintln!("skipped: no /proc/self/statm here");
            return;
        };
        assert!(start > 0);
        // 64 MiB in small blocks, touched, then freed: glibc keeps them in its arena.
        let blocks: Vec<Vec<u8>> = (0..64 * 1024).map(|i| vec![i as u8; 1000]).collect();
        let held = resident_bytes().unwrap();
        assert!(held > start + 32 * 1024 * 1024, "{start} -> {held}");
        // Keep every 64th block so that the freed ones cannot all go back as one heap top.
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(64).collect();
        trim();
        let after = resident_bytes().unwrap();
        if cfg!(target_env = "gnu") {
            assert!(after + 24 * 1024 * 1024 < held, "{held} -> {after}");
        }
        assert_eq!(kept.len(), 1024);
    }
}
