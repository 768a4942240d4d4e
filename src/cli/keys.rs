//! `profile-registry rotate-keys`: re-encrypt every stored secret with the first configured key.
use crate::config::RotateKeysArgs;
use crate::store::postgres::{describe_url, PgOptions, PgStore};

/// Opens the data dir directly (refused while a server holds it), re-encrypts every secret in one
/// transaction and prints the counts; returns false when some records could not be re-encrypted.
pub async fn run_rotate(args: RotateKeysArgs) -> anyhow::Result<bool> {
    let (place, report) = match (&args.at.store, &args.at.data_dir) {
        (Some(url), _) => {
            let crate::store::Location::Postgres(url) =
                crate::store::Location::parse(url).map_err(anyhow::Error::msg)?
            else {
                anyhow::bail!(
                    "--store: give a postgres:// URL (or --data-dir for a sled data dir)"
                );
            };
            let store = PgStore::open(
                &url,
                args.at.secret_key_file.as_deref(),
                &PgOptions::default(),
            )
            .await?;
            (describe_url(&url), store.rotate_keys().await?)
        }
        (None, Some(dir)) => {
            let store = super::open_offline(dir, args.at.secret_key_file.clone(), "rotate-keys")?;
            (dir.display().to_string(), store.rotate_keys().await?)
        }
        (None, None) => anyhow::bail!("give --data-dir or --store"),
    };
    for d in &report.damaged {
        eprintln!("DAMAGED {d} (left as it was)");
    }
    let by_key = report
        .by_old_key
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{}: re-encrypted {} secrets with key {:?}: {} profiles, {} kept profile revisions, {} conversations, {} provider connections; by previous key: {}; damaged records: {}",
        place,
        report.secrets,
        report.key_id,
        report.profiles,
        report.revisions,
        report.conversations,
        report.documents,
        if by_key.is_empty() { "none" } else { &by_key },
        report.damaged.len(),
    );
    Ok(report.damaged.is_empty())
}
