//! The PostgreSQL pass: whether the suite runs on PostgreSQL instead of sled, the database that
//! stands for a data dir, and what a database holds at rest.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The PostgreSQL server the suite runs on instead of sled, when `REGISTRY_TEST_STORE` names one
/// (an admin URL such as `postgres://postgres@127.0.0.1:55432/postgres`; `.ci/run` sets it for the
/// suite's second pass).
pub fn test_postgres() -> Option<String> {
    std::env::var("REGISTRY_TEST_STORE")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// In the PostgreSQL pass, skips a test of sled's own data dir (its lock, offline commands, raw
/// records), saying so.
pub fn sled_only(why: &str) -> bool {
    let skip = test_postgres().is_some();
    if skip {
        eprintln!("SKIPPED in the PostgreSQL pass: {why}");
    }
    skip
}

/// The text of every record a PostgreSQL database holds, and its whole `pg_dump`, for scans of
/// what is at rest.
pub fn postgres_contents(url: &str) -> Vec<u8> {
    let records = Command::new("psql")
        .args(["-X", "-A", "-t", url, "-c"])
        .arg(
            "SELECT convert_from(record, 'UTF8') FROM profiles \
             UNION ALL SELECT convert_from(record, 'UTF8') FROM profile_changes WHERE record IS NOT NULL \
             UNION ALL SELECT convert_from(record, 'UTF8') FROM conversations \
             UNION ALL SELECT convert_from(record, 'UTF8') FROM events",
        )
        .output()
        .expect("psql runs");
    assert!(
        records.status.success(),
        "{}",
        String::from_utf8_lossy(&records.stderr)
    );
    let dump = Command::new("pg_dump")
        .arg(url)
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let mut out = records.stdout;
    out.extend_from_slice(&dump.stdout);
    out
}

/// A PostgreSQL admin URL for tests that need one in either pass (replicas, migrate-store):
/// `REGISTRY_TEST_POSTGRES`, else `REGISTRY_TEST_STORE`.
pub fn postgres_admin() -> Option<String> {
    std::env::var("REGISTRY_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(test_postgres)
}

/// Where a server "on data dir D" keeps its records in the PostgreSQL pass.
pub struct PgTarget {
    /// The database of D.
    pub url: String,
    /// The keys, `D/secret.key` (where sled would keep them).
    pub key_file: PathBuf,
}

/// A database URL under the admin URL `admin`, created when missing.
pub fn postgres_database(admin: &str, name: &str) -> String {
    let mut created = false;
    for _ in 0..20 {
        let out = Command::new("psql")
            .args(["-X", "-q", admin, "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs (install postgresql-client)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("already exists") {
            created = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(created, "cannot create database {name} at {admin}");
    let (base, _) = admin
        .rsplit_once('/')
        .expect("an admin URL ends in /database");
    format!("{base}/{name}")
}

/// In the PostgreSQL pass, the database and key file standing for `data_dir` (one database per
/// data dir, so a server restarted "on the same data dir" finds its records).
pub fn postgres_for(data_dir: &Path) -> Option<PgTarget> {
    let admin = test_postgres()?;
    let path = std::path::absolute(data_dir).unwrap();
    let name = format!(
        "t_{}",
        &profile_registry::sha256_hex(path.to_string_lossy().as_bytes())[..24]
    );
    let url = postgres_database(&admin, &name);
    std::fs::create_dir_all(data_dir).unwrap();
    let key_file = data_dir.join("secret.key");
    if !key_file.exists() {
        let key: [u8; 32] = rand::random();
        use base64::Engine;
        let line = format!(
            "t1:{}\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        std::fs::write(&key_file, line).unwrap();
    }
    Some(PgTarget { url, key_file })
}
