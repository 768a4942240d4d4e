//! `backup`, `restore` and `check`: a whole store to a file and back, and the offline check.
//!
//! The backup file is JSON lines: a header `{"format": "profile-registry-backup", "version": 1,
//! "next_seq", "records", "snapshot_time"}`, one `{"tree", "key", "value"}` line per record (key and
//! value base64 of the stored bytes: secrets stay sealed as stored), and a last line
//! `{"sha256": <hex of every byte before it>}`, so a truncated or altered file is refused.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, ensure, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::connection::{connect, status_error};
use super::open_offline;
use super::target::MAX_RESPONSE_BYTES;
use crate::config::{BackupArgs, CheckArgs, RestoreArgs};
use crate::pb;
use crate::pb::admin_service_client::AdminServiceClient;
use crate::sha256_hex;
use crate::store::crypto::{SecretCipher, LOCAL_KEY_FILE};
use crate::store::postgres::{describe_url, PgOptions, PgStore};
use crate::store::{sealed_key_ids, CheckReport, Location, RawRecord, TreeId};

/// The `format` of a backup file's header.
const FORMAT: &str = "profile-registry-backup";
/// The version of the file format this build writes and reads.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    next_seq: u64,
    records: u64,
    snapshot_time: String,
}

#[derive(Serialize, Deserialize)]
struct Line {
    tree: String,
    key: String,
    value: String,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    sha256: String,
}

/// The contents of a backup file.
#[derive(Debug, PartialEq, Eq)]
pub struct Backup {
    /// The server's change counter at the snapshot.
    pub next_seq: u64,
    /// When the snapshot was taken (RFC 3339).
    pub snapshot_time: String,
    /// Every record.
    pub records: Vec<RawRecord>,
}

fn json_line(out: &mut Vec<u8>, v: &impl Serialize) {
    // Plain structs of strings and numbers always serialize.
    if serde_json::to_writer(&mut *out, v).is_ok() {
        out.push(b'\n');
    }
}

/// The file's bytes.
pub fn encode(backup: &Backup) -> Vec<u8> {
    let mut out = Vec::new();
    json_line(
        &mut out,
        &Header {
            format: FORMAT.into(),
            version: VERSION,
            next_seq: backup.next_seq,
            records: backup.records.len() as u64,
            snapshot_time: backup.snapshot_time.clone(),
        },
    );
    for r in &backup.records {
        json_line(
            &mut out,
            &Line {
                tree: r.tree.name().into(),
                key: STANDARD.encode(&r.key),
                value: STANDARD.encode(&r.value),
            },
        );
    }
    let sha256 = sha256_hex(&out);
    json_line(&mut out, &Trailer { sha256 });
    out
}

/// Reads a file's bytes: refused unless the checksum holds and every line reads.
pub fn decode(bytes: &[u8]) -> Result<Backup, String> {
    const CUT: &str = "the file is truncated or damaged (its last line is not the checksum line)";
    let without_newline = bytes.strip_suffix(b"\n").ok_or(CUT)?;
    let body_len = without_newline
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let (body, trailer) = without_newline.split_at(body_len);
    let trailer: Trailer = serde_json::from_slice(trailer).map_err(|_| CUT)?;
    if sha256_hex(body) != trailer.sha256 {
        return Err("the checksum does not match: the file is damaged or truncated".into());
    }
    let mut lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let header: Header = lines
        .next()
        .and_then(|l| serde_json::from_slice(l).ok())
        .filter(|h: &Header| h.format == FORMAT)
        .ok_or("not a profile-registry backup (no header line)")?;
    if header.version != VERSION {
        return Err(format!(
            "backup format version {} is not {VERSION}, the one this build reads",
            header.version
        ));
    }
    let mut records = Vec::new();
    for (n, line) in (2..).zip(lines) {
        let bad = |why: &str| format!("line {n}: {why}");
        let l: Line = serde_json::from_slice(line).map_err(|_| bad("not a record line"))?;
        let tree = TreeId::from_name(&l.tree).ok_or_else(|| bad("unknown tree"))?;
        let key = STANDARD
            .decode(&l.key)
            .map_err(|_| bad("key is not base64"))?;
        let value = STANDARD
            .decode(&l.value)
            .map_err(|_| bad("value is not base64"))?;
        records.push(RawRecord { tree, key, value });
    }
    if records.len() as u64 != header.records {
        return Err(format!(
            "the header announces {} records but the file holds {}",
            header.records,
            records.len()
        ));
    }
    Ok(Backup {
        next_seq: header.next_seq,
        snapshot_time: header.snapshot_time,
        records,
    })
}

/// Writes `bytes` to `path` through a temp file beside it (mode 0600), synced, then renamed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Records by tree, e.g. `3 profiles, 2 conversations, 1 bindings, 40 events`.
fn describe(counts: &BTreeMap<&'static str, usize>) -> String {
    TreeId::ALL
        .iter()
        .map(|t| format!("{} {}", counts.get(t.name()).unwrap_or(&0), t.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count(records: &[RawRecord]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts.entry(r.tree.name()).or_default() += 1;
    }
    counts
}

/// `backup FILE --server URL`: streams the server's snapshot and writes it atomically.
pub async fn run_backup(args: BackupArgs) -> anyhow::Result<bool> {
    let mut client = AdminServiceClient::new(connect(&args.client).await?)
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let mut stream = client
        .backup(pb::BackupRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let mut header = None;
    let mut records = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        header = header.or(chunk.header);
        for r in chunk.records {
            let tree = TreeId::from_name(&r.tree).with_context(|| {
                format!("the server sent a record of unknown tree {:?}", r.tree)
            })?;
            records.push(RawRecord {
                tree,
                key: r.key,
                value: r.value,
            });
        }
    }
    let header = header.context("the server sent no backup header")?;
    ensure!(
        header.format_version == crate::grpc::admin::BACKUP_FORMAT_VERSION,
        "the server sends backup format {}, which this build does not read",
        header.format_version
    );
    ensure!(
        records.len() as u64 == header.record_count,
        "the stream ended after {} of {} records: nothing was written",
        records.len(),
        header.record_count
    );
    let snapshot_time = header
        .snapshot_time
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let counts = count(&records);
    let backup = Backup {
        next_seq: header.next_seq,
        snapshot_time,
        records,
    };
    write_atomically(&args.file, &encode(&backup))
        .with_context(|| format!("cannot write {}", args.file.display()))?;
    println!(
        "{}: {} records ({}) from the snapshot of {}",
        args.file.display(),
        backup.records.len(),
        describe(&counts),
        backup.snapshot_time
    );
    Ok(true)
}

/// `restore FILE --data-dir DIR`: loads a verified backup into a new or empty data dir, then
/// checks it; false when the check finds problems.
pub async fn run_restore(args: RestoreArgs) -> anyhow::Result<bool> {
    let file = args.file.display();
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {file}"))?;
    let backup =
        decode(&bytes).map_err(|e| anyhow::anyhow!("{file}: {e}; nothing was restored"))?;
    if let Some(store) = &args.at.store {
        return restore_to_postgres(store, &backup, &args).await;
    }
    let Some(dir) = &args.at.data_dir else {
        bail!("give --data-dir or --store");
    };
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("data dir {} cannot be read", dir.display()))?;
        ensure!(
            entries.next().is_none(),
            "data dir {} is not empty: restore fills only a new or empty data dir (it never merges)",
            dir.display()
        );
    }
    let ids = sealed_key_ids(&backup.records);
    if !ids.is_empty() {
        let Some(key_file) = &args.at.secret_key_file else {
            bail!(
                "the backup holds secrets sealed with key ids {}: give --secret-key-file with the keys of the server it came from (its --secret-key-file, or its data dir's {LOCAL_KEY_FILE})",
                join_ids(ids.iter())
            );
        };
        let cipher = SecretCipher::from_key_file(key_file)?;
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !cipher.key_ids().any(|k| k == id.as_str()))
            .collect();
        ensure!(
            missing.is_empty(),
            "the backup holds secrets sealed with key ids {}, which {} lacks: give the key file of the server it came from",
            join_ids(missing.iter().copied()),
            key_file.display()
        );
    }
    let store = open_offline(dir, args.at.secret_key_file.clone(), "restore")?;
    store.restore(&backup.records, backup.next_seq)?;
    println!(
        "{}: restored {} records ({}) from the snapshot of {}",
        dir.display(),
        backup.records.len(),
        describe(&count(&backup.records)),
        backup.snapshot_time
    );
    if args.at.secret_key_file.is_some() {
        println!("serve it with the same --secret-key-file");
    }
    let mut report = store.check()?;
    // A damaged record in the backup does not make the rest unrestorable: it goes to the
    // quarantine (as `check --repair` does), said record by record.
    if !report.damaged.is_empty() {
        for place in store.repair(&report)? {
            println!("DAMAGED {place}: not restored, moved to the quarantine");
        }
        report = store.check()?;
    }
    Ok(print_report(dir, &report))
}

/// `restore FILE --store postgres://...`: the records into an empty database, in one transaction.
async fn restore_to_postgres(
    store: &str,
    backup: &Backup,
    args: &RestoreArgs,
) -> anyhow::Result<bool> {
    let Location::Postgres(url) = Location::parse(store).map_err(anyhow::Error::msg)? else {
        bail!("--store: give a postgres:// URL (or --data-dir for a sled data dir)");
    };
    let target = PgStore::open(
        &url,
        args.at.secret_key_file.as_deref(),
        &PgOptions::default(),
    )
    .await?;
    let ids = sealed_key_ids(&backup.records);
    let keys_open = args
        .at
        .secret_key_file
        .as_deref()
        .map(SecretCipher::from_key_file)
        .transpose()?
        .is_some_and(|c| ids.iter().all(|id| c.key_ids().any(|k| k == id.as_str())));
    ensure!(
        ids.is_empty() || keys_open,
        "the backup holds secrets sealed with key ids {}: give --secret-key-file with the keys of the server it came from",
        join_ids(ids.iter())
    );
    // The records are checked as sled's check does (in a throwaway data dir): damaged ones, and
    // ones that break a rule of acceptable values, are not restored, each named.
    let damaged = damaged_in(backup, args.at.secret_key_file.as_deref())?;
    let records: Vec<RawRecord> = backup
        .records
        .iter()
        .filter(|r| {
            kept(
                r,
                &damaged,
                "DAMAGED",
                "not restored (it stays in the backup file)",
            )
        })
        .cloned()
        .collect();
    target.restore(&records, backup.next_seq).await?;
    println!(
        "{}: restored {} records ({}) from the snapshot of {}; serve it with the same --secret-key-file",
        describe_url(&url),
        records.len(),
        describe(&count(&records)),
        backup.snapshot_time
    );
    Ok(true)
}

/// The records of `backup` that sled's check finds damaged, found in a throwaway data dir.
/// Records set aside by a check, by tree and key.
pub(crate) type SetAside = std::collections::BTreeSet<(crate::store::TreeId, Vec<u8>)>;

/// Whether `r` goes on: a record in `aside` stays behind, named on standard output as
/// `<label> <place>: <why>`.
pub(crate) fn kept(r: &RawRecord, aside: &SetAside, label: &str, why: &str) -> bool {
    let keep = !aside.contains(&(r.tree, r.key.clone()));
    if !keep {
        println!("{label} {}: {why}", crate::store::place_of(r.tree, &r.key));
    }
    keep
}

fn damaged_in(backup: &Backup, key_file: Option<&Path>) -> anyhow::Result<SetAside> {
    let scratch = tempfile::tempdir().context("a scratch dir to check the backup in")?;
    let store = open_offline(scratch.path(), key_file.map(Path::to_path_buf), "restore")?;
    store.restore(&backup.records, backup.next_seq)?;
    Ok(store.check()?.damaged.into_iter().collect())
}

/// `check --data-dir DIR`: every record, offline; false when anything is wrong.
pub async fn run_check(args: CheckArgs) -> anyhow::Result<bool> {
    let dir = &args.data_dir;
    ensure!(
        dir.join("db").is_dir(),
        "{} is not a profile-registry data dir (it has no db folder)",
        dir.display()
    );
    ensure!(
        args.secret_key_file.is_some() || dir.join(LOCAL_KEY_FILE).exists(),
        "{} has no {LOCAL_KEY_FILE}: give --secret-key-file, the key file its server uses",
        dir.display()
    );
    let store = open_offline(dir, args.secret_key_file.clone(), "check")?;
    let mut report = store.check()?;
    if args.repair && !report.damaged.is_empty() {
        for place in store.repair(&report)? {
            println!("REPAIRED {place}: moved to the quarantine");
        }
        report = store.check()?;
    }
    Ok(print_report(dir, &report))
}

/// Prints the counts, each problem and note with its tree and key, and a verdict; true when clean.
fn print_report(dir: &Path, report: &CheckReport) -> bool {
    println!(
        "{}: checked {}; {} secrets open",
        dir.display(),
        describe(&report.counts),
        report.secrets
    );
    for (place, what) in &report.problems {
        println!("PROBLEM {place}: {what}");
    }
    for (place, what) in &report.notes {
        println!("NOTE {place}: {what}");
    }
    match report.problems.len() {
        0 => println!("{}: no problems", dir.display()),
        n => println!("{}: {n} problems", dir.display()),
    }
    report.problems.is_empty()
}

/// Key ids as a list for a message: `k1, k2`.
fn join_ids<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    ids.map(String::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            next_seq: 42,
            snapshot_time: "2026-01-01T00:00:00+00:00".into(),
            records: vec![
                RawRecord {
                    tree: TreeId::Profiles,
                    key: b"gpt".to_vec(),
                    value: br#"{"seq":3}"#.to_vec(),
                },
                RawRecord {
                    tree: TreeId::Events,
                    key: vec![0, 255, 10],
                    value: b"\n\x00garbage".to_vec(),
                },
            ],
        }
    }

    #[test]
    fn a_file_reads_back_as_written() {
        assert_eq!(decode(&encode(&sample())), Ok(sample()));
        let empty = Backup {
            records: Vec::new(),
            ..sample()
        };
        assert_eq!(decode(&encode(&empty)), Ok(empty));
    }

    #[test]
    fn a_truncated_or_altered_file_is_refused() {
        let bytes = encode(&sample());
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            let e = decode(&bytes[..cut]).expect_err("truncated");
            assert!(e.contains("truncated"), "{cut}: {e}");
        }
        let mut altered = bytes.clone();
        altered[30] ^= 1;
        let e = decode(&altered).expect_err("altered");
        assert!(e.contains("checksum"), "{e}");
        // A whole record line dropped (and the checksum recomputed) fails the count.
        let text = String::from_utf8(bytes).expect("text");
        let lines: Vec<&str> = text.lines().collect();
        let body = format!("{}\n{}\n", lines[0], lines[1]);
        let forged = format!("{body}{{\"sha256\":\"{}\"}}\n", sha256_hex(body.as_bytes()));
        let e = decode(forged.as_bytes()).expect_err("short");
        assert!(e.contains("announces 2 records"), "{e}");
    }
}
