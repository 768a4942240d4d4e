//! `migrate` (the PostgreSQL schema) and `migrate-store` (every record from one backend to another).
use anyhow::Context;

use crate::config::{MigrateArgs, MigrateStoreArgs};
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::{Location, Store, StoreOptions, TreeId};

/// `profile-registry migrate`.
pub async fn run_migrate(args: MigrateArgs) -> anyhow::Result<bool> {
    let given = args.url.or(args.store).unwrap_or_default();
    let Location::Postgres(url) = Location::parse(&given).map_err(anyhow::Error::msg)? else {
        anyhow::bail!("--store: migrate applies the PostgreSQL schema: give a postgres:// URL");
    };
    let applied = PgStore::migrate(&url).await?;
    let target = crate::store::postgres::describe_url(&url);
    if applied.is_empty() {
        println!("{target}: the schema is up to date");
    } else {
        let list: Vec<String> = applied.iter().map(ToString::to_string).collect();
        println!("{target}: applied schema version(s) {}", list.join(", "));
    }
    Ok(true)
}

/// `profile-registry migrate-store --from A --to B`.
pub async fn run_migrate_store(args: MigrateStoreArgs) -> anyhow::Result<bool> {
    let from = Location::parse(&args.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = Location::parse(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    anyhow::ensure!(from != to, "--from and --to are the same store");
    let key_file = match (&args.secret_key_file, &from) {
        (Some(k), _) => k.clone(),
        (None, Location::Sled(dir)) => dir.join("secret.key"),
        (None, Location::Postgres(_)) => anyhow::bail!(
            "--secret-key-file: give the key file the PostgreSQL servers use (records move sealed, and must open with it afterwards)"
        ),
    };
    if let Location::Sled(dir) = &from {
        anyhow::ensure!(
            dir.join("db").exists(),
            "--from {}: not a profile-registry data dir (no db inside)",
            dir.display()
        );
    }
    let sled = StoreOptions {
        secret_key_file: Some(key_file.clone()),
        ..StoreOptions::default()
    };
    let pg = PgOptions {
        max_connections: 2,
        ..PgOptions::default()
    };
    let source = Store::open(&from, &sled, &pg)
        .await
        .with_context(|| format!("--from {}", from.describe()))?;
    // A sled source is checked first: records that do not decode, or break a rule the API
    // enforces today, stay behind (named), so the target holds only what every client can read.
    let left_behind: super::backup::SetAside = match &*source {
        Store::Sled(s) => s
            .check()
            .context("checking the source")?
            .damaged
            .into_iter()
            .collect(),
        Store::Postgres(_) => std::collections::BTreeSet::new(),
    };
    let mut snapshot = source.snapshot().await.context("reading the source")?;
    drop(source);
    snapshot.records.retain(|r| {
        let why = "damaged, or breaks a rule of acceptable values (see check); left in the source";
        super::backup::kept(r, &left_behind, "NOT MIGRATED", why)
    });
    let target = Store::open(&to, &sled, &pg)
        .await
        .with_context(|| format!("--to {}", to.describe()))?;
    target
        .restore(&snapshot.records, snapshot.next_seq)
        .await
        .with_context(|| format!("writing to {}", to.describe()))?;
    let count = |t: TreeId| snapshot.records.iter().filter(|r| r.tree == t).count();
    println!(
        "copied {} profiles, {} conversations, {} bindings and {} events from {} to {}",
        count(TreeId::Profiles),
        count(TreeId::Conversations),
        count(TreeId::Bindings),
        count(TreeId::Events),
        from.describe(),
        to.describe()
    );
    println!(
        "secrets moved still encrypted: serve {} with --secret-key-file {}",
        to.describe(),
        key_file.display()
    );
    Ok(true)
}
