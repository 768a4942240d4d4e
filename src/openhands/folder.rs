//! The SDK's profiles folder: `<name>.json` files, written atomically (temp file + rename, mode 0600)
//! while holding `flock` on `.profiles.lock`, as the SDK itself does.
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs2::FileExt;

/// The lock file every SDK operation holds.
pub const LOCK_FILE: &str = ".profiles.lock";
/// How long to wait for the lock (the SDK's own timeout).
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a waiter tries the lock again.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Creates `path` and its parents when missing, the folder itself mode 0700 (it holds keys).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    if !path.exists() {
        fs::create_dir_all(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn locked(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        format!(
            "{} is locked by another process (waited 30 s)",
            path.join(LOCK_FILE).display()
        ),
    )
}

/// The default folder: `$OH_PERSISTENCE_DIR/profiles` when set, else `~/.openhands/profiles`.
pub fn default_dir() -> PathBuf {
    persistence_dir().join("profiles")
}

/// The SDK's persistence folder: `$OH_PERSISTENCE_DIR`, else `~/.openhands`.
pub fn persistence_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("OH_PERSISTENCE_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".openhands")
}

/// The folders a command works on from its `DIR` and `--home [DIR]`: the persistence folder when
/// --home is given (its own default when it names none), and the profiles folder (the home's
/// `profiles/`, else `dir`, else [`default_dir`]).
pub fn profiles_and_home(
    dir: Option<&PathBuf>,
    home: Option<&Option<PathBuf>>,
) -> (Option<PathBuf>, PathBuf) {
    let home = home.map(|h| h.clone().unwrap_or_else(persistence_dir));
    let dir = match &home {
        Some(h) => h.join("profiles"),
        None => dir.cloned().unwrap_or_else(default_dir),
    };
    (home, dir)
}

/// Writes files into `dir` atomically, as the SDK does (see [`Staging`]). `done` is told how many
/// files are in place.
pub fn write_files(dir: &Path, files: &[(String, &str)], done: &dyn Fn(usize)) -> io::Result<()> {
    let mut staging = Staging::new(dir);
    for (name, text) in files {
        staging.stage(name.clone(), text)?;
    }
    staging.commit(done)
}

/// Files written into a folder but not yet in place. Each goes to a `tmpXXXX.tmp` in the folder
/// (mode 0600); [`Staging::commit`] makes all of their contents durable with one `syncfs`, renames
/// each over its target and syncs the folder. A crash leaves every file either old or new, never
/// partial, and costs two syncs instead of one per file. Dropped uncommitted, it deletes its temp
/// files.
pub struct Staging {
    dir: PathBuf,
    staged: Vec<(tempfile::TempPath, String)>,
    /// The folder's file names when the first [`Staging::compare`] ran.
    existing: Option<std::collections::HashSet<std::ffi::OsString>>,
    /// Compare by opening each file instead of listing the folder first (see [`Staging::few`]).
    probe: bool,
}

/// Whether a file's text (first) says the same as the text to write (second).
pub type Equivalent = dyn Fn(&str, &str) -> bool;

/// What the folder holds under a name, against what would be written there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// No such entry.
    Absent,
    /// A regular file of mode 0600 with exactly those bytes.
    Same,
    /// Anything else: other bytes, another mode, a symlink, a folder.
    Different,
}

impl Staging {
    /// Stages into `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            staged: Vec::new(),
            existing: None,
            probe: false,
        }
    }

    /// Stages a few files into a folder that may hold many (a sync's batch of changes): each
    /// compare opens its one file instead of listing the whole folder first.
    pub fn few(dir: &Path) -> Self {
        Self {
            probe: true,
            ..Self::new(dir)
        }
    }

    /// What `name` in the folder holds against `text` (never follows a symlink). A file with other
    /// bytes still counts as the same when `equivalent(its text, text)` says so (e.g. two Fernet
    /// encryptions of one profile). The folder is listed once, so a fresh (or missing) folder costs
    /// no opens (with [`Staging::few`], each name is looked up instead).
    pub fn compare(
        &mut self,
        name: &str,
        text: &str,
        equivalent: Option<&Equivalent>,
    ) -> io::Result<FileState> {
        let dir = &self.dir;
        if self.probe {
            if fs::symlink_metadata(dir.join(name)).is_err() {
                return Ok(FileState::Absent);
            }
        } else {
            let existing = match &mut self.existing {
                Some(names) => names,
                unset => unset.insert(match fs::read_dir(dir) {
                    Ok(entries) => entries
                        .map(|entry| entry.map(|e| e.file_name()))
                        .collect::<io::Result<_>>()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Default::default(),
                    Err(e) => return Err(e),
                }),
            };
            if !existing.contains(std::ffi::OsStr::new(name)) {
                return Ok(FileState::Absent);
            }
        }
        let Some(have) = own_file_bytes(&dir.join(name), text.len()) else {
            return Ok(FileState::Different);
        };
        let same = have == text.as_bytes()
            || equivalent
                .is_some_and(|same| std::str::from_utf8(&have).is_ok_and(|have| same(have, text)));
        Ok(if same {
            FileState::Same
        } else {
            FileState::Different
        })
    }

    /// Writes `text` to a temp file that [`Staging::commit`] renames to `name`. A folder (or
    /// anything else a file cannot be renamed over) in `name`'s place is an error naming it, before
    /// anything is put in place.
    pub fn stage(&mut self, name: String, text: &str) -> io::Result<()> {
        if let Ok(meta) = fs::symlink_metadata(self.dir.join(&name)) {
            if meta.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{name}: a folder is in the way; nothing was written"),
                ));
            }
        }
        let mut tmp = tempfile::Builder::new()
            .prefix("tmp")
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)?;
        tmp.write_all(text.as_bytes())?;
        self.staged.push((tmp.into_temp_path(), name));
        Ok(())
    }

    /// How many files are staged.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Puts every staged file in place (syncfs, renames, folder sync); `done` is told how many are.
    pub fn commit(self, done: &dyn Fn(usize)) -> io::Result<()> {
        let folder = File::open(&self.dir)?;
        sync_filesystem(&folder)?;
        for (i, (tmp, name)) in self.staged.into_iter().enumerate() {
            tmp.persist(self.dir.join(name)).map_err(|e| e.error)?;
            done(i + 1);
        }
        folder.sync_all()
    }
}

/// Reads a file that another process may be changing: opened without following a symlink and
/// without blocking (a FIFO put in a file's place cannot hang the reader), then checked to be a
/// regular file of at most `max_bytes` and UTF-8. The error says what happened in words, for a
/// line that names the file: it vanished, it is no longer a regular file, it is too large.
/// With `follow`, a symlink is followed (the caller checked where it points).
pub fn read_text_file(path: &Path, max_bytes: u64, follow: bool) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = if follow {
        libc::O_NONBLOCK
    } else {
        libc::O_NOFOLLOW | libc::O_NONBLOCK
    };
    let mut file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("vanished while the folder was read".into())
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("is a symbolic link; profiles must be regular files".into())
        }
        Err(e) => return Err(format!("cannot be opened: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file (it changed while the folder was read?)".into());
    }
    if meta.len() > max_bytes {
        return Err(format!(
            "is {} bytes, over the limit of {max_bytes} bytes",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    Read::by_ref(&mut file)
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "grew over the limit of {max_bytes} bytes while read"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".into())
}

/// The bytes of `path` when it is a regular file of mode 0600 (never follows a symlink) of at most
/// `limit` bytes (what a profile of about that size could be), else `None`.
fn own_file_bytes(path: &Path, limit: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let limit = u64::try_from(limit.saturating_mul(2).max(64 * 1024)).unwrap_or(u64::MAX);
    if !meta.is_file() || meta.permissions().mode() & 0o7777 != 0o600 || meta.len() > limit {
        return None;
    }
    let mut have = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut have).ok()?;
    Some(have)
}

/// Flushes every dirty page of the file system holding `file` (Linux `syncfs`).
pub fn sync_filesystem(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `file` keeps open for the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Profile files as (file name, text).
pub type Documents = Vec<(String, String)>;

/// A file that was not read as a profile, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The file name.
    pub file: String,
    /// Why.
    pub reason: String,
}

/// A profiles folder, locked for as long as this value lives.
pub struct ProfilesDir {
    path: PathBuf,
    _lock: Option<File>,
}

impl ProfilesDir {
    /// Locks `path` (creating it, mode 0700, when `create`), waiting up to 30 s for the SDK's lock.
    /// A read-only folder (a mounted ConfigMap or Secret) cannot hold a lock file: it is read unlocked.
    pub fn lock(path: &Path, create: bool) -> io::Result<Self> {
        Self::lock_named(path, create, LOCK_FILE)
    }

    /// [`ProfilesDir::lock`] of another SDK folder, by the name of its store's lock file (e.g.
    /// `.meta-profiles.lock`).
    pub fn lock_named(path: &Path, create: bool, lock_file: &str) -> io::Result<Self> {
        let started = Instant::now();
        loop {
            match Self::attempt(path, create, started, lock_file)? {
                Some(dir) => return Ok(dir),
                None => std::thread::sleep(LOCK_POLL),
            }
        }
    }

    /// [`ProfilesDir::lock`] for async callers: the wait yields, so a signal can end it.
    pub async fn lock_async(path: &Path, create: bool) -> io::Result<Self> {
        let started = Instant::now();
        loop {
            match Self::attempt(path, create, started, LOCK_FILE)? {
                Some(dir) => return Ok(dir),
                None => tokio::time::sleep(LOCK_POLL).await,
            }
        }
    }

    /// One attempt at the lock: `None` while another process holds it, an error once the wait
    /// that began at `started` is over.
    fn attempt(
        path: &Path,
        create: bool,
        started: Instant,
        lock_file: &str,
    ) -> io::Result<Option<Self>> {
        match Self::try_lock(path, create, lock_file)? {
            None if started.elapsed() > LOCK_TIMEOUT => Err(locked(path)),
            held => Ok(held),
        }
    }

    /// One attempt at the lock: `None` while another process holds it.
    fn try_lock(path: &Path, create: bool, lock_file: &str) -> io::Result<Option<Self>> {
        if create {
            create_private_dir(path)?;
        }
        if !path.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a folder", path.display()),
            ));
        }
        let lock = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(lock_file))
        {
            Ok(f) => f,
            Err(e)
                if !create
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
                    ) =>
            {
                return Ok(Some(Self {
                    path: path.to_owned(),
                    _lock: None,
                }));
            }
            Err(e) => return Err(e),
        };
        if lock.try_lock_exclusive().is_err() {
            return Ok(None);
        }
        Ok(Some(Self {
            path: path.to_owned(),
            _lock: Some(lock),
        }))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every `*.json` file, in name order, as (file name, text). The lock file, temp files and
    /// folders are passed over; symlinks, files over `max_bytes` and non-UTF-8 files are refused
    /// without being read. With `internal_links`, a symlink that resolves inside the folder is read
    /// (Kubernetes mounts ConfigMap and Secret keys as `name.json -> ..data/name.json`).
    pub fn read_documents(
        &self,
        max_bytes: u64,
        internal_links: bool,
    ) -> io::Result<(Documents, Vec<Refused>)> {
        let root = fs::canonicalize(&self.path)?;
        let mut names: Vec<(String, Option<fs::FileType>)> = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name == LOCK_FILE || name.ends_with(".tmp") || !name.ends_with(".json") {
                continue;
            }
            // A file deleted between the listing and this call has no type: reported below.
            names.push((name, entry.file_type().ok()));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let (mut docs, mut refused) = (Vec::new(), Vec::new());
        for (name, kind) in names {
            let refuse = |reason: String| Refused {
                file: name.clone(),
                reason,
            };
            let path = self.path.join(&name);
            let follow = match kind {
                None => {
                    refused.push(refuse("vanished while the folder was read".into()));
                    continue;
                }
                Some(kind) if kind.is_dir() => continue,
                Some(kind) if kind.is_symlink() => {
                    let inside =
                        fs::canonicalize(&path).is_ok_and(|t| t.starts_with(&root) && t.is_file());
                    if !(internal_links && inside) {
                        refused.push(refuse(
                            "is a symbolic link; profiles must be regular files".into(),
                        ));
                        continue;
                    }
                    true
                }
                Some(_) => false,
            };
            match read_text_file(&path, max_bytes, follow) {
                Ok(text) => docs.push((name, text)),
                Err(reason) => refused.push(refuse(reason)),
            }
        }
        Ok((docs, refused))
    }

    /// Deletes the `*.json` profile files whose names are not in `keep`; returns their names.
    pub fn prune(&self, keep: &BTreeSet<String>) -> io::Result<Vec<String>> {
        let names = prunable(&self.path, keep)?;
        for name in &names {
            fs::remove_file(self.path.join(format!("{name}.json")))?;
        }
        Ok(names)
    }
}

/// The names of the `*.json` regular files in `dir` that are not in `keep` (what
/// [`ProfilesDir::prune`] deletes), sorted; none when `dir` does not exist.
pub fn prunable(dir: &Path, keep: &BTreeSet<String>) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(file) = entry.file_name().into_string() else {
            continue;
        };
        let Some(name) = file.strip_suffix(".json") else {
            continue;
        };
        if !keep.contains(name) && entry.file_type()?.is_file() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_text_file_says_what_happened() {
        let dir = tempfile::tempdir().unwrap();
        let gone = read_text_file(&dir.path().join("gone.json"), 100, false).unwrap_err();
        assert_eq!(gone, "vanished while the folder was read");
        std::fs::create_dir(dir.path().join("d.json")).unwrap();
        let folder = read_text_file(&dir.path().join("d.json"), 100, false).unwrap_err();
        assert!(folder.contains("not a regular file"), "{folder}");
        std::fs::write(dir.path().join("big.json"), "x".repeat(101)).unwrap();
        let big = read_text_file(&dir.path().join("big.json"), 100, false).unwrap_err();
        assert!(big.contains("over the limit"), "{big}");
        std::os::unix::fs::symlink("big.json", dir.path().join("link.json")).unwrap();
        let link = read_text_file(&dir.path().join("link.json"), 1000, false).unwrap_err();
        assert!(link.contains("symbolic link"), "{link}");
        assert_eq!(
            read_text_file(&dir.path().join("link.json"), 1000, true)
                .unwrap()
                .len(),
            101
        );
    }
}
