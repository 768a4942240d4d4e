//! The everyday commands: `list`, `get`, `put`, `delete`, `rename`, `watch`, `conversations
//! list|get|events` and `completions`, against a server or a stopped server's data dir.
use std::io::Read;

use anyhow::Context;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryFutureExt};
use tonic::Status;

use super::connection::status_error;
use super::output::{
    emit, fields, json, llm_fields, or_dash, print_profile, say, table, time, Listing,
};
use super::registry::{Messages, Page, Registry};
use super::{fernet_key_from_env, interrupted, Usage};
use crate::config::{
    CompletionsArgs, ConversationEventsArgs, ConversationGetArgs, ConversationListArgs,
    ConversationsCommand, DeleteArgs, GetArgs, GetOutput, ListArgs, Output, PutArgs, Reach,
    RenameArgs, WatchArgs,
};
use crate::domain::{SecretField, SECRET_MASK};
use crate::grpc::convert::llm_to_pb;
use crate::pb;

const PAGE: i32 = 1000;

/// `list`: every profile, a page at a time.
pub async fn run_list(args: ListArgs) -> anyhow::Result<bool> {
    let listing = Listing {
        message: "profileregistry.v1.Profile",
        header: &["NAME", "MODEL", "BASE_URL", "REVISION", "UPDATED"],
        row: profile_row,
    };
    print_pages(&args.reach, listing, |registry, page_token| {
        let req = pb::ListProfilesRequest {
            page_size: PAGE,
            page_token,
        };
        let page = registry.list_profiles(req);
        page.map_ok(|p| (p.profiles, p.next_page_token)).boxed()
    })
    .await
}

/// A list command: asks `page` for each page in turn, from the first to the last, of the registry
/// `reach` names, and prints the items as `listing` says: the JSON as each page comes, the table
/// once all have.
pub(super) async fn print_pages<T: prost::Message>(
    reach: &Reach,
    listing: Listing<T>,
    mut page: impl for<'r> FnMut(&'r mut Registry, String) -> Page<'r, T>,
) -> anyhow::Result<bool> {
    let mut registry = Registry::open(&reach.target).await?;
    let mut rows = Vec::new();
    let mut page_token = String::new();
    loop {
        let (items, next) = page(&mut registry, page_token)
            .await
            .map_err(status_error)?;
        for item in &items {
            match reach.output {
                Output::Json => say!("{}", json(item, listing.message)),
                Output::Table => rows.push((listing.row)(item)),
            }
        }
        if next.is_empty() {
            break;
        }
        page_token = next;
    }
    if reach.output == Output::Table {
        emit(&table(listing.header, &rows));
    }
    Ok(true)
}

fn profile_row(p: &pb::Profile) -> Vec<String> {
    let llm = p.llm.clone().unwrap_or_default();
    vec![
        p.name.clone(),
        or_dash(Some(&llm.model)),
        or_dash(llm.base_url.as_deref()),
        p.revision.to_string(),
        time(p.update_time.as_ref()),
    ]
}

/// `get NAME`: one profile as fields, proto JSON, or its SDK file.
pub async fn run_get(args: GetArgs) -> anyhow::Result<bool> {
    if args.output == GetOutput::Sdk && args.resolve_connection {
        return Err(anyhow::Error::new(super::Usage(
            "--resolve-connection does not apply to -o sdk: the SDK's file keeps the reference (provider_connection_id), as the SDK saves it".into(),
        )));
    }
    let mut registry = Registry::open(&args.target).await?;
    if args.output == GetOutput::Sdk {
        use pb::export_profiles_request::Secrets;
        let secrets = if args.reveal_secrets {
            Secrets::Plaintext
        } else {
            Secrets::Redacted
        };
        let resp = registry
            .export_profiles(pb::ExportProfilesRequest {
                names: vec![args.name.clone()],
                secrets: secrets as i32,
                ..Default::default()
            })
            .await
            .map_err(status_error)?;
        let doc =
            resp.documents.into_iter().next().with_context(|| {
                format!("the server sent no file for profile \"{}\"", args.name)
            })?;
        // The exact bytes of the file: the SDK writes no trailing newline.
        emit(&doc.json);
        return Ok(true);
    }
    let p = registry
        .get_profile(pb::GetProfileRequest {
            name: args.name,
            reveal_secrets: args.reveal_secrets,
            resolve_connection: args.resolve_connection,
            revision: None,
        })
        .await
        .map_err(status_error)?;
    match args.output {
        GetOutput::Json | GetOutput::Sdk => say!("{}", json(&p, "profileregistry.v1.Profile")),
        GetOutput::Table => emit(&fields(&profile_fields(&p))),
    }
    Ok(true)
}

fn profile_fields(p: &pb::Profile) -> Vec<(String, String)> {
    let mut out = vec![
        ("name".to_owned(), p.name.clone()),
        ("revision".to_owned(), p.revision.to_string()),
        ("created".to_owned(), time(p.create_time.as_ref())),
        ("updated".to_owned(), time(p.update_time.as_ref())),
    ];
    out.extend(llm_fields("", &p.llm.clone().unwrap_or_default()));
    out
}

/// `put NAME [FILE|-]`: an SDK profile document, created or replacing the stored one.
pub async fn run_put(args: PutArgs) -> anyhow::Result<bool> {
    let (what, text) = match args.file.as_deref() {
        None => ("standard input".to_owned(), read_stdin()?),
        Some(p) if p.as_os_str() == "-" => ("standard input".to_owned(), read_stdin()?),
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
    };
    let key = fernet_key_from_env(&args.fernet_key_env);
    let llm = crate::openhands::profile::parse_file(&text, key.as_ref())
        .map_err(|reason| anyhow::anyhow!("{what}: {reason}"))?;
    let masked: Vec<SecretField> = SecretField::ALL
        .into_iter()
        .filter(|f| llm.secret(*f).is_some_and(crate::domain::Secret::is_mask))
        .collect();
    let mut registry = Registry::open(&args.reach.target).await?;
    let profile = pb::Profile {
        name: args.name,
        llm: Some(llm_to_pb(llm)),
        ..Default::default()
    };
    let (verb, p) = put(&mut registry, profile, args.expected_revision).await?;
    print_profile(args.reach.output, &p, || {
        format!("{verb} profile \"{}\" (revision {})", p.name, p.revision)
    });
    let llm = p.llm.clone().unwrap_or_default();
    for field in masked {
        let kept = match field {
            SecretField::ApiKey => &llm.api_key,
            SecretField::AwsAccessKeyId => &llm.aws_access_key_id,
            SecretField::AwsSecretAccessKey => &llm.aws_secret_access_key,
            SecretField::AwsSessionToken => &llm.aws_session_token,
        };
        if kept.is_none() {
            eprintln!(
                "note: \"{}\" has no {}: the document holds the mask {SECRET_MASK} and no value was stored before",
                p.name,
                field.key()
            );
        }
    }
    Ok(true)
}

/// Replaces the profile, or creates it when it does not exist (and no revision is expected);
/// says which.
async fn put(
    registry: &mut Registry,
    profile: pb::Profile,
    expected_revision: Option<i64>,
) -> anyhow::Result<(&'static str, pb::Profile)> {
    // Update first, create on NOT_FOUND, update again if another writer created it meanwhile:
    // each step is one atomic call, and the answer says what happened.
    for _ in 0..3 {
        let updated = registry
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(profile.clone()),
                allow_missing: false,
                expected_revision,
            })
            .await;
        match updated {
            Ok(p) => return Ok(("updated", p)),
            Err(s) if s.code() == tonic::Code::NotFound && expected_revision.is_none() => {}
            Err(s) => return Err(status_error(s)),
        }
        let created = registry
            .create_profile(pb::CreateProfileRequest {
                profile: Some(profile.clone()),
            })
            .await;
        match created {
            Ok(p) => return Ok(("created", p)),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(status_error(s)),
        }
    }
    anyhow::bail!(
        "profile \"{}\" was created and deleted by others while this put ran; try again",
        profile.name
    )
}

fn read_stdin() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Err(anyhow::Error::new(Usage(
            "put reads the profile document from standard input: give FILE, or pipe the document in"
                .into(),
        )));
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read standard input")?;
    Ok(text)
}

/// `delete NAME`.
pub async fn run_delete(args: DeleteArgs) -> anyhow::Result<bool> {
    let mut registry = Registry::open(&args.target).await?;
    let resp = registry
        .delete_profile(pb::DeleteProfileRequest {
            name: args.name.clone(),
            expected_revision: args.expected_revision,
            allow_missing: false,
            force: args.force,
            purge: args.purge,
        })
        .await
        .map_err(status_error)?;
    let kept = if args.purge {
        "its history purged"
    } else {
        "its history kept: `undelete` brings it back"
    };
    say!(
        "deleted profile \"{}\" (it was at revision {}; {kept})",
        args.name,
        resp.revision
    );
    Ok(true)
}

/// `rename OLD NEW`.
pub async fn run_rename(args: RenameArgs) -> anyhow::Result<bool> {
    let RenameArgs { old, new, reach } = args;
    let req = pb::RenameProfileRequest {
        name: old.clone(),
        new_name: new,
    };
    change_profile(
        &reach,
        |registry| registry.rename_profile(req).boxed(),
        |p| {
            format!(
                "renamed profile \"{old}\" to \"{}\" (revision {})",
                p.name, p.revision
            )
        },
    )
    .await
}

/// A command that changes one profile: `call` on the registry `reach` names, then the profile it
/// answers with, printed as [`print_profile`] does with the line `says` makes of it.
pub(super) async fn change_profile(
    reach: &Reach,
    call: impl for<'r> FnOnce(&'r mut Registry) -> BoxFuture<'r, Result<pb::Profile, Status>>,
    says: impl FnOnce(&pb::Profile) -> String,
) -> anyhow::Result<bool> {
    let mut registry = Registry::open(&reach.target).await?;
    let p = call(&mut registry).await.map_err(status_error)?;
    print_profile(reach.output, &p, || says(&p));
    Ok(true)
}

/// `watch`: one line per change until interrupted.
pub async fn run_watch(args: WatchArgs) -> anyhow::Result<bool> {
    needs_server(&args.reach.target, "watch")?;
    let mut registry = Registry::open(&args.reach.target).await?;
    let stream = registry
        .watch_profiles(pb::WatchProfilesRequest {
            send_initial: args.send_initial,
            start_after_seq: args.start_after_seq,
            send_bookmarks: false,
        })
        .await
        .map_err(status_error)?;
    follow(stream, |e: &pb::ProfileEvent| match args.reach.output {
        Output::Json => json(e, "profileregistry.v1.ProfileEvent"),
        Output::Table => {
            let kind = match e.r#type() {
                pb::profile_event::Type::Delete => "DELETE",
                _ => "PUT",
            };
            let seq = e.seq;
            let model = e
                .profile
                .as_ref()
                .and_then(|p| p.llm.as_ref())
                .map_or("-", |l| l.model.as_str());
            format!(
                "{kind:<6}  {}  revision {}  {model}  seq {seq}{}",
                e.name,
                e.revision,
                if e.initial { "  (initial)" } else { "" }
            )
        }
    })
    .await
}

/// Following changes needs a server: offline, this process holds the data dir and nothing else
/// can change it, so the command would wait forever.
fn needs_server(target: &crate::config::TargetArgs, what: &str) -> anyhow::Result<()> {
    if target.data_dir.is_some() {
        return Err(anyhow::Error::new(Usage(format!(
            "{what} follows a running server (--server): with --data-dir nothing else can change the data dir while it runs"
        ))));
    }
    Ok(())
}

/// Prints each message of `stream` as `line` renders it until the stream ends (an error) or the
/// user interrupts (a success).
async fn follow<T>(mut stream: Messages<T>, line: impl Fn(&T) -> String) -> anyhow::Result<bool> {
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            () = &mut interrupted => return Ok(true),
            next = stream.next() => match next {
                Some(Ok(item)) => say!("{}", line(&item)),
                Some(Err(status)) => return Err(status_error(status)),
                None => anyhow::bail!("the server ended the stream"),
            },
        }
    }
}

/// `conversations list|get|events`.
pub async fn run_conversations(command: ConversationsCommand) -> anyhow::Result<bool> {
    match command {
        ConversationsCommand::List(args) => conversations_list(args).await,
        ConversationsCommand::Get(args) => conversations_get(args).await,
        ConversationsCommand::Events(args) => conversations_events(args).await,
    }
}

async fn conversations_list(args: ConversationListArgs) -> anyhow::Result<bool> {
    let status = match &args.status {
        Some(s) => parse_status(s)? as i32,
        None => 0,
    };
    let listing = Listing {
        message: "profileregistry.v1.Conversation",
        header: &[
            "ID", "TITLE", "STATUS", "AGENT", "EVENTS", "REVISION", "UPDATED",
        ],
        row: |c: &pb::Conversation| {
            vec![
                c.id.clone(),
                or_dash(Some(&c.title)),
                status_name(c.execution_status),
                agent(c),
                c.event_count.to_string(),
                c.revision.to_string(),
                time(c.update_time.as_ref()),
            ]
        },
    };
    let profile = args.profile.clone().unwrap_or_default();
    print_pages(&args.reach, listing, |registry, page_token| {
        let req = pb::ListConversationsRequest {
            page_size: PAGE,
            page_token,
            execution_status: status,
            profile: profile.clone(),
        };
        let page = registry.list_conversations(req);
        page.map_ok(|p| (p.conversations, p.next_page_token))
            .boxed()
    })
    .await
}

/// An execution status from a flag: `idle`, `IDLE`, `waiting-for-confirmation`, ...
fn parse_status(raw: &str) -> anyhow::Result<pb::ExecutionStatus> {
    let name = raw.trim().to_ascii_uppercase().replace('-', "_");
    match pb::ExecutionStatus::from_str_name(&name) {
        Some(s) if s != pb::ExecutionStatus::Unspecified => Ok(s),
        _ => Err(anyhow::Error::new(Usage(format!(
            "--status {raw}: must be one of idle, running, paused, waiting_for_confirmation, finished, error, stuck"
        )))),
    }
}

fn status_name(raw: i32) -> String {
    pb::ExecutionStatus::try_from(raw)
        .map_or_else(|_| raw.to_string(), |s| s.as_str_name().to_lowercase())
}

/// The agent's LLM: `profile NAME` or `inline MODEL`.
fn agent(c: &pb::Conversation) -> String {
    match c.llms.get("agent").and_then(|b| b.source.as_ref()) {
        Some(pb::llm_binding::Source::Profile(name)) => format!("profile {name}"),
        Some(pb::llm_binding::Source::Inline(llm)) => format!("inline {}", llm.model),
        None => "-".to_owned(),
    }
}

async fn conversations_get(args: ConversationGetArgs) -> anyhow::Result<bool> {
    let mut registry = Registry::open(&args.reach.target).await?;
    let c = registry
        .get_conversation(pb::GetConversationRequest {
            id: args.id,
            resolve_llms: true,
            reveal_secrets: args.reveal_secrets,
        })
        .await
        .map_err(status_error)?;
    if args.reach.output == Output::Json {
        say!("{}", json(&c, "profileregistry.v1.Conversation"));
        return Ok(true);
    }
    let mut out = vec![
        ("id".to_owned(), c.id.clone()),
        ("title".to_owned(), or_dash(Some(&c.title))),
        ("status".to_owned(), status_name(c.execution_status)),
        ("revision".to_owned(), c.revision.to_string()),
        ("events".to_owned(), c.event_count.to_string()),
        ("created".to_owned(), time(c.create_time.as_ref())),
        ("updated".to_owned(), time(c.update_time.as_ref())),
    ];
    let mut tags: Vec<_> = c.tags.iter().collect();
    tags.sort();
    out.extend(
        tags.into_iter()
            .map(|(k, v)| (format!("tag.{k}"), v.clone())),
    );
    let mut usages: Vec<_> = c.llms.iter().collect();
    usages.sort_by(|a, b| a.0.cmp(b.0));
    for (usage, binding) in usages {
        let source = match &binding.source {
            Some(pb::llm_binding::Source::Profile(name)) => format!("profile {name}"),
            Some(pb::llm_binding::Source::Inline(_)) => "inline".to_owned(),
            None => "-".to_owned(),
        };
        out.push((format!("llm.{usage}"), source));
        if let Some(resolved) = &binding.resolved {
            out.extend(llm_fields(&format!("llm.{usage}."), resolved));
        }
    }
    emit(&fields(&out));
    Ok(true)
}

async fn conversations_events(args: ConversationEventsArgs) -> anyhow::Result<bool> {
    let mut registry = Registry::open(&args.reach.target).await?;
    let line = |e: &pb::Event| match args.reach.output {
        Output::Json => json(e, "profileregistry.v1.Event"),
        Output::Table => format!(
            "{:>6}  {:<20}  {:<12}  {:<28}  {}",
            e.seq,
            time(e.timestamp.as_ref()),
            or_dash(Some(&e.source)),
            or_dash(Some(&e.kind)),
            e.id
        ),
    };
    let header = || {
        if args.reach.output == Output::Table {
            say!(
                "{:>6}  {:<20}  {:<12}  {:<28}  ID",
                "SEQ",
                "TIMESTAMP",
                "SOURCE",
                "KIND"
            );
        }
    };
    if args.follow {
        needs_server(&args.reach.target, "conversations events --follow")?;
        // The stored events first, then live ones, each once.
        let stream = registry
            .watch_events(pb::WatchEventsRequest {
                conversation_id: args.id,
                after_seq: None,
            })
            .await
            .map_err(status_error)?;
        header();
        return follow(stream, line).await;
    }
    let mut page_token = String::new();
    let mut first = true;
    loop {
        let page = registry
            .list_events(pb::ListEventsRequest {
                conversation_id: args.id.clone(),
                page_size: PAGE,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(status_error)?;
        if std::mem::take(&mut first) {
            header();
        }
        for e in &page.events {
            say!("{}", line(e));
        }
        if page.next_page_token.is_empty() {
            return Ok(true);
        }
        page_token = page.next_page_token;
    }
}

/// `completions SHELL`: the script on standard output.
pub fn run_completions(args: &CompletionsArgs) -> anyhow::Result<bool> {
    use clap::CommandFactory;
    let mut command = crate::config::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "profile-registry", &mut script);
    emit(&String::from_utf8_lossy(&script));
    Ok(true)
}
