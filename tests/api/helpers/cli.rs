//! Running the binary's command line (without the caller's REGISTRY_ variables) and the profiles
//! folders its commands read.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::binary;

/// Runs the binary with `args` and `env`, with none of the caller's REGISTRY_ variables.
pub fn cli_output<I, S>(args: I, env: &[(&str, &str)]) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_")) {
        cmd.env_remove(k);
    }
    cmd.args(args).envs(env.iter().copied()).output().unwrap()
}

/// A command's stdout and stderr, as text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// [`cli_output`] off the runtime's threads, so an in-process server keeps serving it.
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        cli_output(&args, &env)
    })
    .await
    .unwrap()
}

/// A profiles folder holding one SDK file, `<name>.json`, with `api_key`.
pub fn profiles_folder(parent: &Path, name: &str, api_key: &str) -> PathBuf {
    let dir = parent.join("profiles-in");
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(r#"{{"model": "gpt-4o", "api_key": "{api_key}", "schema_version": 1}}"#);
    std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
    dir
}
