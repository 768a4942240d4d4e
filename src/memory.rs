//! Hands the allocator's free memory back to the OS.
//!
//! glibc's malloc keeps what a burst freed (an import, a page of events, a batch of writes) in
//! its arenas, spread over pages that also hold live data, and gives back only the top of each
//! heap: after loading the benchmark's data set the server held about 250 MiB of RSS for about
//! 80 MiB of live heap. `malloc_trim(0)` releases every whole free page inside the arenas too.
//! A thread looks at the RSS every `interval` and trims when it has grown by [`GROWTH`] above the
//! lowest it was since the last trim, so a steady load that reuses its memory costs one read of
//! `/proc/self/status` a tick; and, without growth, every [`SWEEP`].
use std::time::{Duration, Instant};

/// Blocks of at least this size get pages of their own (glibc's `mmap`), handed back when freed:
/// sled's log buffers (512 KiB), not its pages or nodes, which are smaller.
const MAPPED_FROM: usize = 512 * 1024;

/// Keeps sled's log buffers out of malloc's arenas: each gets pages of its own, given back to
/// the OS the moment it is freed. glibc maps blocks of 128 KiB and more at first, but raises that
/// threshold to the size of every mapped block freed (up to 32 MiB); after the first log buffer
/// was freed the next ones came from the arenas, where sled's I/O threads free them among live
/// data that stays. Holding the threshold at 512 KiB, with the benchmark's data set and its
/// Health/Check, GetProfile and UpdateProfile rows: RSS at the end 54 to 68 MiB (mean 61, five
/// runs) against 63 to 81 (mean 69), and 4 to 7 MiB less after UpdateProfile at concurrency 1
/// in each. (128 KiB saved no more, and GetProfile on a store of 100,000 profiles, which reads
/// sled's nodes back from disk, ran 10 to 15% slower with it.) The server sets it once its store
/// is open: sled reads its log back at start in buffers of the same size, and pages of their own
/// for those slowed a start on 100,000 profiles from 0.11 to 0.37 s. A threshold the operator set (`GLIBC_TUNABLES` or
/// `MALLOC_MMAP_THRESHOLD_`) is left alone. Only on Linux with glibc; elsewhere a no-op.
pub fn hold_mapping_threshold() {
    let set_by_operator = std::env::var("GLIBC_TUNABLES")
        .is_ok_and(|t| t.contains("mmap_threshold"))
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some();
    if !set_by_operator {
        set_mapping_threshold(MAPPED_FROM);
        HELD.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether [`hold_mapping_threshold`] set the threshold: each trim sets it again. glibc's `free`
/// raises the threshold without a lock once it has read that nobody fixed it, so a free racing
/// the first `mallopt` could still leave its own size behind; after that `mallopt` no free
/// changes it, and the next trim puts 512 KiB back.
static HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mapping_threshold(bytes: usize) {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a parameter of the allocator, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mapping_threshold(_bytes: usize) {}

/// How much the RSS must have grown since the last trim before the next one.
const GROWTH: u64 = 4 * 1024 * 1024;

/// How often a trim runs even when the RSS has not grown: memory freed after the last trim (a
/// burst that ended just after it) does not raise the RSS, and nothing else would give it back.
const SWEEP: Duration = Duration::from_secs(30);

/// Starts the trimming thread (`interval` zero: none), once per process: a second server in the
/// same process (as in tests) shares the first one's. Only on Linux with glibc; elsewhere a no-op.
pub fn spawn_trimmer(interval: Duration) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    if interval.is_zero() || own_rss().is_none() || !cfg!(target_env = "gnu") {
        return;
    }
    STARTED.call_once(|| start(interval));
}

fn start(interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("memory-trim".into())
        .spawn(move || {
            let (mut floor, mut last) = (0_u64, Instant::now());
            loop {
                std::thread::sleep(interval);
                let Some(before) = own_rss() else {
                    return;
                };
                floor = floor.min(before);
                if before < floor.saturating_add(GROWTH) && last.elapsed() < SWEEP {
                    continue;
                }
                let started = Instant::now();
                trim();
                let after = own_rss().unwrap_or(before);
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

/// The resident set size (VmRSS) of a process, `self` or a pid, in KiB; None when it is gone or
/// there is no procfs.
pub fn resident_kib(process: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// This process's resident set size, in bytes.
fn own_rss() -> Option<u64> {
    resident_kib("self").map(|kib| kib * 1024)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    if HELD.load(std::sync::atomic::Ordering::Relaxed) {
        set_mapping_threshold(MAPPED_FROM);
    }
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
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn large_blocks_stay_mapped_after_one_is_freed() {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let mapped = || unsafe { libc::mallinfo2() }.hblks;
        set_mapping_threshold(MAPPED_FROM);
        // glibc would raise its threshold past 600 KiB when this block is freed...
        drop(std::hint::black_box(vec![1_u8; 600 * 1024]));
        // ...so the next one would come from an arena. Other tests allocate and free at the same
        // time (a free racing a `mallopt` can leave its size as the threshold, hence the setting
        // again): one block counted as mapped in five tries is enough.
        let seen = (0..5).any(|_| {
            set_mapping_threshold(MAPPED_FROM);
            let before = mapped();
            let block = std::hint::black_box(vec![2_u8; 600 * 1024]);
            let held = mapped();
            drop(block);
            held > before
        });
        assert!(seen, "a 600 KiB block came from an arena");
    }

    #[test]
    fn the_resident_size_is_read_and_a_trim_gives_freed_pages_back() {
        let Some(start) = own_rss() else {
            eprintln!("skipped: no /proc/self/status here");
            return;
        };
        assert!(start > 0);
        // 64 MiB in small blocks, touched, then freed: glibc keeps them in its arena.
        let blocks: Vec<Vec<u8>> = (0..64 * 1024).map(|i| vec![i as u8; 1000]).collect();
        let held = own_rss().unwrap();
        assert!(held > start + 32 * 1024 * 1024, "{start} -> {held}");
        // Keep every 64th block so that the freed ones cannot all go back as one heap top.
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(64).collect();
        trim();
        let after = own_rss().unwrap();
        if cfg!(target_env = "gnu") {
            assert!(after + 24 * 1024 * 1024 < held, "{held} -> {after}");
        }
        assert_eq!(kept.len(), 1024);
    }
}
