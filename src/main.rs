//! profile-registry: parse the command line, start logging, run the command.
use std::process::ExitCode;

use clap::Parser;
use profile_registry::config::{Cli, Command};
use profile_registry::server::{shutdown_signal, Application};
use profile_registry::{cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let everyday = cli.command.as_ref().is_some_and(Command::is_everyday);
    // Secret reveals stay audited offline too.
    telemetry::init(&cli.log, if everyday { "error,audit=info" } else { "info" });
    let result = match cli.command {
        None => serve(cli.serve).await.map(|()| true),
        Some(Command::Serve(args)) => serve(*args).await.map(|()| true),
        Some(Command::Import(args)) => cli::profiles::run_import(args).await,
        Some(Command::Export(args)) => cli::profiles::run_export(args).await,
        Some(Command::Sync(args)) => cli::sync::run_sync(args).await,
        Some(Command::NewToken(args)) => new_token(&args),
        Some(Command::ImportConversations(args)) => cli::conversations::run_import(args).await,
        Some(Command::ExportConversations(args)) => cli::conversations::run_export(args).await,
        Some(Command::RotateKeys(args)) => cli::keys::run_rotate(args).await,
        Some(Command::Backup(args)) => cli::backup::run_backup(args).await,
        Some(Command::Restore(args)) => cli::backup::run_restore(args).await,
        Some(Command::Check(args)) => cli::backup::run_check(args).await,
        Some(Command::List(args)) => cli::everyday::run_list(args).await,
        Some(Command::Get(args)) => cli::everyday::run_get(args).await,
        Some(Command::Put(args)) => cli::everyday::run_put(args).await,
        Some(Command::Delete(args)) => cli::everyday::run_delete(args).await,
        Some(Command::Rename(args)) => cli::everyday::run_rename(args).await,
        Some(Command::History(args)) => cli::history::run_history(args).await,
        Some(Command::Rollback(args)) => cli::history::run_rollback(args).await,
        Some(Command::Undelete(args)) => cli::history::run_undelete(args).await,
        Some(Command::Diff(args)) => cli::history::run_diff(args).await,
        Some(Command::Watch(args)) => cli::everyday::run_watch(args).await,
        Some(Command::Conversations(command)) => cli::everyday::run_conversations(command).await,
        Some(Command::Completions(args)) => cli::everyday::run_completions(&args),
        Some(Command::Migrate(args)) => cli::stores::run_migrate(args).await,
        Some(Command::MigrateStore(args)) => cli::stores::run_migrate_store(args).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if e.downcast_ref::<cli::Usage>().is_some() => {
            eprintln!("profile-registry: error: {e:#}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("profile-registry: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: profile_registry::config::ServeArgs) -> anyhow::Result<()> {
    let result = Application::build(args)
        .await?
        .run_until(shutdown_signal())
        .await;
    // Exit here, not by returning: the runtime would wait for blocking tasks, and one stuck on a
    // failed volume would keep the process alive past --shutdown-grace.
    let code = match &result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("profile-registry: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn new_token(args: &profile_registry::config::NewTokenArgs) -> anyhow::Result<bool> {
    let (name, roles) = (args.name.trim(), args.roles.trim());
    anyhow::ensure!(
        !name.is_empty() && !name.contains(':'),
        "--name must be non-empty and without ':'"
    );
    let token = format!(
        "prt_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let line = format!(
        "{name}:{roles}:sha256:{}",
        profile_registry::auth::token_hash_hex(&token)
    );
    profile_registry::auth::check_tokens_line(&line)?;
    println!("token: {token}");
    println!("tokens-file line: {line}");
    Ok(true)
}
