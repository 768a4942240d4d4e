//! Decoded profiles by name, each kept beside a fingerprint of the stored bytes it was decoded
//! from. A read whose stored bytes have the same fingerprint takes the decoded record and skips the
//! JSON decode and the decryption; any write, by any path, stores other bytes (every write of a
//! profile gets a new change seq), so for this check no write has to remember to invalidate
//! anything.
//!
//! A ready response may also be trusted: served without reading the stored bytes at all, which
//! is what a plain GetProfile of a hot profile costs most besides its reply. That needs the
//! writes' help, in one place: the transaction that changes the profiles tree
//! (`SledStore::apply`), and the raw paths of repair and restore, mark the profiles they change
//! (see [`Writes`]). A read that did not overlap any write trusts what it made from the stored
//! bytes; anything it cannot trust it checks by fingerprint as before.
//!
//! The fingerprint is 128 bits of SipHash under two keys drawn at start (nobody outside the
//! process can aim at a collision; by chance one is 2^-128 per changed record). Keeping the bytes
//! themselves would cost their size again, or, kept as sled's buffer, a whole tree node. (POLYVAL,
//! the universal hash of AES-GCM-SIV, was tried in its place: on the 10,000-profile benchmark it
//! took 6% of the server's samples against SipHash's 3.6%.)
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use crate::domain::Profile;
use crate::store::codec::ProfileRecord;
use crate::store::StoreError;

/// How many profiles are kept decoded: the profiles a fleet of runtimes reads over and over. A
/// decoded profile of about 1 KiB stored costs about 7 KiB of memory (measured: 2,000 of them raised
/// RSS by 15 MiB), so the whole of a large store would not fit the 64 MiB the server aims at, and
/// 512 (about 3.5 MiB) leave room for sled's pages; when the map is full it starts again.
pub(super) const DECODED_PROFILES: usize = 512;

/// What a kept entry costs beyond its key and value: the map's slot (about 72 bytes, more at the
/// map's load factor), the key's and the value's headers and allocations.
const ENTRY_OVERHEAD: usize = 160;

/// Decoded profiles and ready responses, each kept by name beside the fingerprint of the stored
/// bytes it was made from.
pub(super) struct DecodedProfiles {
    decoded: Kept<Shared>,
    ready: Kept<bytes::Bytes>,
    keys: (RandomState, RandomState),
    /// What makes a ready response from a profile, once the server has said (see
    /// [`Self::answer_with`]): until then there are none; from then on reads make them and every
    /// write keeps the response of what it stored.
    builder: std::sync::OnceLock<fn(&Profile) -> bytes::Bytes>,
    /// How many reads a trusted response answered (the tests' view of it).
    #[cfg(test)]
    trusted_hits: std::sync::atomic::AtomicUsize,
}

type Fingerprint = (u64, u64);

/// A decoded record: its change seq and its profile, shared with whoever reads it.
pub(super) type Shared = (u64, Arc<Profile>);

/// A value, the fingerprint of the bytes it was made from, and what it counts against the budget;
/// whether it is known to match the stored record now (see [`Writes`]).
struct Printed<T> {
    print: Fingerprint,
    value: T,
    weight: usize,
    current: bool,
}

/// The kept values by key, the weight they count together, and the writes of the tree.
struct Entries<T> {
    map: HashMap<Box<[u8]>, Printed<T>>,
    used: usize,
    writes: Writes,
}

/// What a value needs to be trusted without the stored bytes. A write of a profile (every path
/// that changes the profiles tree: `SledStore::apply`, which every write of the services goes
/// through, and the raw ones: restore, `check --repair`, `put_raw_profile_record`) marks its keys' values not current when it
/// begins and again when it ends, and counts each mark in `seq`. A read that read the stored bytes
/// marks the value made from them current only when no write is under way and none began or ended
/// since before it read them: then those bytes are still the stored ones, and stay so until the
/// next write of that key, which unmarks it before it changes them.
#[derive(Default)]
struct Writes {
    under_way: usize,
    seq: u64,
}

/// Values by key, each beside the fingerprint of the bytes it was made from; at most `budget`
/// of weight (a full map starts again).
struct Kept<T> {
    entries: Mutex<Entries<T>>,
    budget: usize,
}

impl<T: Clone> Kept<T> {
    fn new(budget: usize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                used: 0,
                writes: Writes::default(),
            }),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<T>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value kept for `key` when it was made from bytes with this fingerprint.
    fn get(&self, key: &[u8], print: Fingerprint) -> Option<T> {
        self.lock()
            .map
            .get(key)
            .filter(|kept| kept.print == print)
            .map(|kept| kept.value.clone())
    }

    /// The value kept for `key` when it is known to match the stored record; `check` is given
    /// its fingerprint while the lock is held.
    fn current(&self, key: &[u8], check: impl FnOnce(Fingerprint)) -> Option<T> {
        let guard = self.lock();
        let kept = guard.map.get(key).filter(|kept| kept.current)?;
        check(kept.print);
        Some(kept.value.clone())
    }

    /// The count of writes begun and ended so far, to give [`Self::trust`] after reading the
    /// stored bytes.
    fn writes_seen(&self) -> u64 {
        self.lock().writes.seq
    }

    /// Marks the value kept for `key` current when it was made from bytes with this fingerprint,
    /// read after [`Self::writes_seen`] said `seen`, and no write began or ended since.
    fn trust(&self, key: &[u8], print: Fingerprint, seen: u64) {
        let mut guard = self.lock();
        let entries = &mut *guard;
        if entries.writes.under_way != 0 || entries.writes.seq != seen {
            return;
        }
        if let Some(kept) = entries.map.get_mut(key).filter(|k| k.print == print) {
            kept.current = true;
        }
    }

    /// A write of `keys` (`None`: any key) begins (`begins`) or ends: their values are not current.
    fn mark_write(&self, keys: Option<&[&[u8]]>, begins: bool) {
        let mut guard = self.lock();
        let entries = &mut *guard;
        if begins {
            entries.writes.under_way += 1;
        } else {
            entries.writes.under_way -= 1;
        }
        entries.writes.seq += 1;
        match keys {
            Some(keys) => {
                for key in keys {
                    if let Some(kept) = entries.map.get_mut(*key) {
                        kept.current = false;
                    }
                }
            }
            None => entries
                .map
                .values_mut()
                .for_each(|kept| kept.current = false),
        }
    }

    /// Keeps `value` for `key`, counting `weight` against the budget (a value heavier than the
    /// whole budget is not kept).
    fn keep(&self, key: &[u8], print: Fingerprint, value: T, weight: usize) {
        if weight > self.budget {
            return;
        }
        let mut guard = self.lock();
        let Entries { map, used, .. } = &mut *guard;
        if let Some(old) = map.remove(key) {
            *used -= old.weight;
        }
        if *used + weight > self.budget {
            map.clear();
            *used = 0;
        }
        *used += weight;
        map.insert(
            key.into(),
            Printed {
                print,
                value,
                weight,
                current: false,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

impl DecodedProfiles {
    /// At most `decoded` decoded profiles and `ready_bytes` of ready responses.
    pub(super) fn new(decoded: usize, ready_bytes: usize) -> Self {
        Self {
            decoded: Kept::new(decoded),
            ready: Kept::new(ready_bytes),
            keys: (RandomState::new(), RandomState::new()),
            builder: std::sync::OnceLock::new(),
            #[cfg(test)]
            trusted_hits: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// From now on ready responses are made by `build` (the first builder given stays): by reads,
    /// and by each write for what it stored, so the first read after a write (or an import)
    /// already finds it.
    pub(super) fn answer_with(&self, build: fn(&Profile) -> bytes::Bytes) {
        let _ = self.builder.set(build);
    }

    /// Keeps the ready response of `profile`, just stored under `key` as `bytes`, when a builder
    /// was given. A write that then fails leaves a response whose fingerprint no stored bytes
    /// have: it is never served.
    pub(super) fn written(&self, key: &[u8], bytes: &[u8], profile: &Profile) {
        if let Some(build) = self.builder.get() {
            let made = build(profile);
            self.keep_ready(key, self.fingerprint(bytes), made);
        }
    }

    fn keep_ready(&self, key: &[u8], print: Fingerprint, made: bytes::Bytes) {
        let weight = key.len() + made.len() + ENTRY_OVERHEAD;
        self.ready.keep(key, print, made, weight);
    }

    fn fingerprint(&self, bytes: &[u8]) -> Fingerprint {
        (self.keys.0.hash_one(bytes), self.keys.1.hash_one(bytes))
    }

    /// The record stored under `key` as `bytes`: the kept one when it was decoded from the same
    /// bytes, else `decode`'s, kept for the next read when `keep` (a read of one profile; a scan of
    /// every profile takes what is kept but keeps nothing, so it does not push the hot set out).
    /// The profile is shared with the map: a read that only looks at it copies nothing.
    pub(super) fn get_or_decode(
        &self,
        key: &[u8],
        bytes: &[u8],
        keep: bool,
        decode: impl FnOnce(&[u8]) -> Result<ProfileRecord, StoreError>,
    ) -> Result<Shared, StoreError> {
        self.decoded_of(&self.read_of(key, bytes), keep, decode)
    }

    /// `bytes` read under `key`, with their fingerprint (taken once however many maps look).
    fn read_of<'a>(&self, key: &'a [u8], bytes: &'a [u8]) -> Read<'a> {
        Read {
            key,
            bytes,
            print: self.fingerprint(bytes),
        }
    }

    /// [`Self::get_or_decode`] of a read.
    fn decoded_of(
        &self,
        read: &Read<'_>,
        keep: bool,
        decode: impl FnOnce(&[u8]) -> Result<ProfileRecord, StoreError>,
    ) -> Result<Shared, StoreError> {
        if let Some(shared) = self.decoded.get(read.key, read.print) {
            return Ok(shared);
        }
        let ProfileRecord { seq, profile } = decode(read.bytes)?;
        let shared = (seq, Arc::new(profile));
        if keep {
            self.decoded.keep(read.key, read.print, shared.clone(), 1);
        }
        Ok(shared)
    }

    /// The ready response of the current profile under `key`: the kept one when it is known to
    /// match the stored record (no read of the tree), else [`Self::ready`]'s for what `stored`
    /// reads, kept, and trusted from then on when no write of the tree overlapped the read (see
    /// [`Writes`]); `None` when nothing is stored, or before a builder is given. `stored` is
    /// called once, or (debug builds, on a trusted hit) to check the kept response.
    pub(super) fn ready_current<B: AsRef<[u8]>>(
        &self,
        key: &[u8],
        stored: impl Fn() -> Result<Option<B>, StoreError>,
        decode: impl FnOnce(&[u8]) -> Result<ProfileRecord, StoreError>,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        if self.builder.get().is_none() {
            return Ok(None);
        }
        let hit = self.ready.current(key, |print| {
            // Tests run debug builds: there every trusted hit is checked against the stored
            // record, under the lock that a write needs to mark it, so a path that changes the
            // tree without the marks fails them.
            if cfg!(debug_assertions) {
                let now = stored().ok().flatten();
                assert!(
                    now.is_some_and(|b| self.fingerprint(b.as_ref()) == print),
                    "a trusted ready response whose record changed without a write's marks"
                );
            }
        });
        if let Some(kept) = hit {
            #[cfg(test)]
            self.trusted_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Some(kept));
        }
        let seen = self.ready.writes_seen();
        let Some(bytes) = stored()? else {
            return Ok(None);
        };
        let read = self.read_of(key, bytes.as_ref());
        let made = self.ready_of(&read, true, decode)?;
        self.ready.trust(key, read.print, seen);
        Ok(made)
    }

    /// A write of the profiles `keys` (`None`: of any profile) that is about to change the tree:
    /// until the guard is dropped, after the change, no ready response is trusted, and those of
    /// `keys` are not from then on (until a read trusts them again).
    pub(super) fn writing<'k>(&self, keys: Option<&'k [&'k [u8]]>) -> Writing<'_, 'k> {
        self.ready.mark_write(keys, true);
        Writing { cache: self, keys }
    }

    /// The ready response of the profile stored under `key` as `bytes`: the kept one when it was
    /// made from the same bytes, else the builder's from the profile (a kept decoded copy, or
    /// decoded without keeping it: the small response is what is kept, when `keep`); `None` before
    /// a builder is given.
    pub(super) fn ready(
        &self,
        key: &[u8],
        bytes: &[u8],
        keep: bool,
        decode: impl FnOnce(&[u8]) -> Result<ProfileRecord, StoreError>,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        self.ready_of(&self.read_of(key, bytes), keep, decode)
    }

    /// [`Self::ready`] of a read.
    fn ready_of(
        &self,
        read: &Read<'_>,
        keep: bool,
        decode: impl FnOnce(&[u8]) -> Result<ProfileRecord, StoreError>,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        let Some(build) = self.builder.get() else {
            return Ok(None);
        };
        if let Some(kept) = self.ready.get(read.key, read.print) {
            return Ok(Some(kept));
        }
        let (_, profile) = self.decoded_of(read, false, decode)?;
        let made = build(&profile);
        if keep {
            self.keep_ready(read.key, read.print, made.clone());
        }
        Ok(Some(made))
    }
}

/// The stored bytes of a profile as read under its key, and their fingerprint.
struct Read<'a> {
    key: &'a [u8],
    bytes: &'a [u8],
    print: Fingerprint,
}

/// A write of profiles under way (see [`DecodedProfiles::writing`]); it ends when dropped, also
/// when the write failed or panicked.
pub(super) struct Writing<'c, 'k> {
    cache: &'c DecodedProfiles,
    keys: Option<&'k [&'k [u8]]>,
}

impl Drop for Writing<'_, '_> {
    fn drop(&mut self) {
        self.cache.ready.mark_write(self.keys, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LlmConfig, ProfileName, Timestamp};
    use std::cell::Cell;

    thread_local! {
        /// How many ready responses [`model_reply`] made on this thread (each test is one thread).
        static BUILDS: Cell<usize> = const { Cell::new(0) };
    }

    /// A ready response for the tests: the profile's model; counted in [`BUILDS`].
    fn model_reply(p: &Profile) -> bytes::Bytes {
        BUILDS.with(|b| b.set(b.get() + 1));
        bytes::Bytes::from(p.llm.model.clone())
    }

    fn builds() -> usize {
        BUILDS.with(Cell::get)
    }

    fn record(seq: u64, model: &str) -> ProfileRecord {
        let name = ProfileName::parse("p", "name").expect("a valid name");
        let llm = LlmConfig {
            model: model.to_owned(),
            ..LlmConfig::default()
        };
        ProfileRecord {
            seq,
            profile: Profile {
                name,
                llm,
                revision: 1,
                create_time: Timestamp::now(),
                update_time: Timestamp::now(),
                update_principal: String::new(),
            },
        }
    }

    #[test]
    fn equal_bytes_are_decoded_once_and_other_bytes_again() {
        let cache = DecodedProfiles::new(10, 10);
        let mut decodes = 0;
        let mut read = |bytes: &[u8], model: &str| {
            cache
                .get_or_decode(b"p", bytes, true, |_| {
                    decodes += 1;
                    Ok(record(1, model))
                })
                .expect("decodes")
                .1
                .llm
                .model
                .clone()
        };
        assert_eq!(read(b"one", "a"), "a");
        assert_eq!(read(b"one", "ignored"), "a", "same bytes: the kept record");
        assert_eq!(read(b"two", "b"), "b", "other bytes: decoded again");
        assert_eq!(decodes, 2);
    }

    #[test]
    fn a_kept_profile_is_shared_not_copied() {
        let cache = DecodedProfiles::new(10, 10);
        let read = || {
            cache
                .get_or_decode(b"p", b"one", true, |_| Ok(record(7, "m")))
                .expect("decodes")
        };
        let (first, second) = (read(), read());
        assert_eq!((first.0, second.0), (7, 7));
        assert!(
            Arc::ptr_eq(&first.1, &second.1),
            "both reads hold the kept copy"
        );
    }

    #[test]
    fn a_ready_response_is_made_once_per_stored_bytes() {
        let cache = DecodedProfiles::new(10, 1 + 1 + ENTRY_OVERHEAD);
        cache.answer_with(model_reply);
        let before = builds();
        let answer = |key: &[u8], bytes: &[u8], model: &str| {
            cache
                .ready(key, bytes, true, |_| Ok(record(1, model)))
                .expect("decodes")
                .expect("a builder is given")
        };
        assert_eq!(answer(b"p", b"one", "a"), "a");
        assert_eq!(
            answer(b"p", b"one", "ignored"),
            "a",
            "same bytes: the kept answer"
        );
        assert_eq!(answer(b"p", b"two", "b"), "b", "other bytes: made again");
        assert_eq!(
            answer(b"q", b"one", "c"),
            "c",
            "another name, a full map: starts again"
        );
        assert_eq!(answer(b"p", b"two", "d"), "d", "pushed out: made again");
        assert_eq!(builds() - before, 4);
    }

    /// Reads of profile `p` through [`DecodedProfiles::ready_current`], counting the reads of the
    /// stored bytes; `stored` is what the tree holds, `before` runs inside the read of it.
    struct Reader<'a> {
        cache: &'a DecodedProfiles,
        stored: std::cell::RefCell<&'static [u8]>,
        reads: Cell<usize>,
    }

    impl<'a> Reader<'a> {
        /// A reader of `cache`, given the test builder, with "one" stored for `p`.
        fn new(cache: &'a DecodedProfiles) -> Self {
            cache.answer_with(model_reply);
            Self {
                cache,
                stored: std::cell::RefCell::new(b"one"),
                reads: Cell::new(0),
            }
        }

        fn read_with(&self, model: &str, during: impl FnOnce()) -> String {
            let during = std::cell::Cell::new(Some(during));
            let stored = || {
                self.reads.set(self.reads.get() + 1);
                if let Some(during) = during.take() {
                    during();
                }
                Ok(Some(*self.stored.borrow()))
            };
            let made = self
                .cache
                .ready_current(b"p", stored, |_| Ok(record(1, model)))
                .expect("decodes")
                .expect("stored, with a builder");
            String::from_utf8(made.to_vec()).expect("a model name")
        }

        fn read(&self, model: &str) -> String {
            self.read_with(model, || {})
        }

        /// How many reads a trusted response answered.
        fn trusted(&self) -> usize {
            self.cache
                .trusted_hits
                .load(std::sync::atomic::Ordering::Relaxed)
        }

        /// A write of `keys` that stores `bytes` for `p`.
        fn write(&self, keys: Option<&[&[u8]]>, bytes: &'static [u8]) {
            let _writing = self.cache.writing(keys);
            *self.stored.borrow_mut() = bytes;
        }
    }

    #[test]
    fn a_trusted_response_is_served_without_a_read_until_a_write_of_its_profile() {
        let cache = DecodedProfiles::new(10, 1 << 20);
        let r = Reader::new(&cache);
        assert_eq!(r.read("a"), "a");
        assert_eq!((r.reads.get(), r.trusted()), (1, 0), "read, then trusted");
        assert_eq!(r.read("ignored"), "a");
        assert_eq!(r.trusted(), 1, "the second read: the trusted response");
        r.write(Some(&[b"q"]), b"one");
        assert_eq!(r.read("ignored"), "a");
        assert_eq!(
            r.trusted(),
            2,
            "a write of another profile leaves it trusted"
        );
        r.write(Some(&[b"p"]), b"two");
        assert_eq!(r.read("b"), "b", "after a write of it: read and made again");
        assert_eq!(r.trusted(), 2);
        assert_eq!(r.read("ignored"), "b");
        assert_eq!(r.trusted(), 3, "then trusted again");
        r.write(None, b"three");
        assert_eq!(r.read("c"), "c", "after a write of any profile: read again");
        assert_eq!(r.trusted(), 3);
    }

    #[test]
    fn a_read_that_overlaps_a_write_is_not_trusted() {
        let cache = DecodedProfiles::new(10, 1 << 20);
        let r = Reader::new(&cache);
        let keys: [&[u8]; 1] = [b"p"];
        let writing = cache.writing(Some(&keys));
        assert_eq!(r.read("a"), "a");
        assert_eq!(r.read("ignored"), "a", "the same bytes: the kept response");
        assert_eq!(
            (r.reads.get(), r.trusted()),
            (2, 0),
            "a write under way: every read reads the tree"
        );
        drop(writing);
        assert_eq!(r.read("ignored"), "a");
        assert_eq!(r.trusted(), 0, "this read trusts it");
        assert_eq!(r.read("ignored"), "a");
        assert_eq!(r.trusted(), 1, "once no write is under way");

        r.write(Some(&keys), b"two");
        // A whole write of another profile between the start of a read and its end.
        assert_eq!(r.read_with("b", || r.write(Some(&[b"q"]), b"two")), "b");
        assert_eq!(r.read("ignored"), "b");
        assert_eq!(r.trusted(), 1, "a write during the read: not trusted by it");
        assert_eq!(r.read("ignored"), "b");
        assert_eq!(r.trusted(), 2, "trusted by the next read");
    }

    /// Tests run debug builds, where a trusted response is checked against the stored record: a
    /// change of the tree without the marks fails there instead of serving an old reply.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "changed without a write's marks")]
    fn a_change_without_the_marks_fails_debug_builds() {
        let cache = DecodedProfiles::new(10, 1 << 20);
        let r = Reader::new(&cache);
        assert_eq!(r.read("a"), "a");
        *r.stored.borrow_mut() = b"two";
        r.read("b");
    }

    #[test]
    fn without_a_builder_nothing_is_read_or_made() {
        let cache = DecodedProfiles::new(10, 1 << 20);
        let made = cache
            .ready_current(
                b"p",
                || -> Result<Option<&[u8]>, StoreError> { panic!("read the tree") },
                |_| Ok(record(1, "m")),
            )
            .expect("no error");
        assert!(made.is_none());
    }

    #[test]
    fn a_failed_decode_is_not_kept_and_a_full_map_starts_again() {
        let cache = DecodedProfiles::new(1, 1);
        let failed = cache.get_or_decode(b"p", b"x", true, |_| {
            Err(StoreError::Storage("damaged".into()))
        });
        assert!(failed.is_err());
        assert!(cache.decoded.len() == 0);
        for key in [&b"a"[..], b"b"] {
            cache
                .get_or_decode(key, b"x", true, |_| Ok(record(1, "m")))
                .expect("decodes");
        }
        assert_eq!(cache.decoded.len(), 1);
    }

    #[test]
    fn ready_responses_are_kept_up_to_their_budget_in_bytes() {
        // A reply of 4 bytes under a 1-byte name weighs 165 with its overhead: three fit.
        let cache = DecodedProfiles::new(10, 3 * (1 + 4 + ENTRY_OVERHEAD));
        cache.answer_with(|_| bytes::Bytes::from_static(b"made"));
        let answer = |key: &[u8]| {
            cache
                .ready(key, b"stored", true, |_| Ok(record(1, "m")))
                .expect("decodes")
        };
        for key in [&b"a"[..], b"b", b"c"] {
            answer(key);
        }
        assert_eq!(cache.ready.len(), 3, "three replies fit the budget");
        answer(b"a");
        assert_eq!(cache.ready.len(), 3, "a reply kept again counts once");
        answer(b"d");
        assert_eq!(
            cache.ready.len(),
            1,
            "a fourth spends the budget: the map starts again"
        );
    }

    #[test]
    fn a_write_keeps_its_ready_response_once_a_builder_is_given() {
        let cache = DecodedProfiles::new(10, 1 << 20);
        let stored = record(1, "written");
        cache.written(b"p", b"one", &stored.profile);
        assert_eq!(cache.ready.len(), 0, "no builder yet: nothing kept");
        let unread = cache.ready(b"p", b"one", true, |_| panic!("decoded"));
        assert!(
            unread.expect("no decode").is_none(),
            "no builder yet: no response"
        );
        cache.answer_with(model_reply);
        cache.written(b"p", b"one", &stored.profile);
        let before = builds();
        let read = cache
            .ready(b"p", b"one", true, |_| panic!("decoded"))
            .expect("kept");
        assert_eq!(builds(), before, "the read built nothing");
        assert_eq!(
            read.as_deref(),
            Some(&b"written"[..]),
            "the first read takes what the write kept"
        );
        let other = cache
            .ready(b"p", b"two", true, |_| Ok(record(2, "other")))
            .expect("decodes");
        assert_eq!(
            other.as_deref(),
            Some(&b"other"[..]),
            "other stored bytes: made again"
        );
    }

    #[test]
    fn a_scan_takes_what_is_kept_and_keeps_nothing() {
        let cache = DecodedProfiles::new(10, 10);
        cache
            .get_or_decode(b"a", b"x", false, |_| Ok(record(1, "m")))
            .expect("decodes");
        assert!(cache.decoded.len() == 0);
        cache
            .get_or_decode(b"a", b"x", true, |_| Ok(record(1, "kept")))
            .expect("decodes");
        let scanned = cache
            .get_or_decode(b"a", b"x", false, |_| Ok(record(1, "decoded")))
            .expect("decodes");
        assert_eq!(scanned.1.llm.model, "kept");
    }
}
