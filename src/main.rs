//! profile-registry: parse the command line, start logging, run the command.
use std::process::ExitCode;

use clap::Parser;
use profile_registry::config::{Cli, Command};
use profile_registry::server::{shutdown_signal, Application};
use profile_registry::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.log);
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("profile-registry: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: profile_registry::config::ServeArgs) -> anyhow::Result<()> {
    Application::build(args)
        .await?
        .run_until(shutdown_signal())
        .await
}
