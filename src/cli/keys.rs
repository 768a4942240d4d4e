//! `profile-registry rotate-keys`: re-encrypt every stored secret with the first configured key.
use crate::config::RotateKeysArgs;

/// Opens the data dir directly (refused while a server holds it), re-encrypts every secret in one
/// transaction and prints the counts; returns false when some records could not be re-encrypted.
pub async fn run_rotate(args: RotateKeysArgs) -> anyhow::Result<bool> {
    let store = super::open_offline(&args.data_dir, args.secret_key_file.clone(), "rotate-keys")?;
    let report = store.rotate_keys().await?;
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
        "{}: re-encrypted {} secrets with key {:?}: {} profiles, {} conversations; by previous key: {}; damaged records: {}",
        args.data_dir.display(),
        report.secrets,
        report.key_id,
        report.profiles,
        report.conversations,
        if by_key.is_empty() { "none" } else { &by_key },
        report.damaged.len(),
    );
    Ok(report.damaged.is_empty())
}
