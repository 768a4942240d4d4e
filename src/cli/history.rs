//! The history commands: `history NAME` (the kept revisions), `rollback NAME REVISION`,
//! `undelete NAME` and `diff NAME REV [REV]`, against a server or a stopped server's data dir.
use std::collections::BTreeMap;

use futures::{FutureExt, TryFutureExt};
use tonic::Code;

use super::connection::status_error;
use super::everyday::{change_profile, print_pages};
use super::output::{llm_fields, or_dash, say, time, Listing};
use super::registry::Registry;
use crate::config::{DiffArgs, HistoryArgs, RollbackArgs, UndeleteArgs};
use crate::domain::SecretField;
use crate::pb;

const PAGE: i32 = 1000;

/// `history NAME`: every kept revision, newest first.
pub async fn run_history(args: HistoryArgs) -> anyhow::Result<bool> {
    let listing = Listing {
        message: "profileregistry.v1.Profile",
        header: &["REVISION", "MODEL", "BASE_URL", "UPDATED", "BY"],
        row: |p: &pb::Profile| {
            let llm = p.llm.clone().unwrap_or_default();
            vec![
                p.revision.to_string(),
                or_dash(Some(&llm.model)),
                or_dash(llm.base_url.as_deref()),
                time(p.update_time.as_ref()),
                or_dash(Some(&p.update_principal)),
            ]
        },
    };
    print_pages(&args.reach, listing, |registry, page_token| {
        let req = pb::ListProfileRevisionsRequest {
            name: args.name.clone(),
            page_size: PAGE,
            page_token,
        };
        let page = registry.list_profile_revisions(req);
        page.map_ok(|p| (p.revisions, p.next_page_token)).boxed()
    })
    .await
}

/// `rollback NAME REVISION`.
pub async fn run_rollback(args: RollbackArgs) -> anyhow::Result<bool> {
    let req = pb::RollbackProfileRequest {
        name: args.name.clone(),
        revision: args.revision,
        expected_revision: args.expected_revision,
    };
    change_profile(
        &args.reach,
        |registry| registry.rollback_profile(req).boxed(),
        |p| {
            format!(
                "profile \"{}\" now holds the configuration of revision {} (as revision {})",
                p.name, args.revision, p.revision
            )
        },
    )
    .await
}

/// `undelete NAME`.
pub async fn run_undelete(args: UndeleteArgs) -> anyhow::Result<bool> {
    let req = pb::UndeleteProfileRequest {
        name: args.name.clone(),
    };
    change_profile(
        &args.reach,
        |registry| registry.undelete_profile(req).boxed(),
        |p| format!("profile \"{}\" is back (revision {})", p.name, p.revision),
    )
    .await
}

/// `diff NAME FROM [TO]`: the keys added, removed and changed from one revision to the other.
/// Secrets are compared on their values when the caller may read them, and shown only as changed
/// or unchanged; without the secrets role they are not compared, and the output says so.
pub async fn run_diff(args: DiffArgs) -> anyhow::Result<bool> {
    let mut registry = Registry::open(&args.target).await?;
    let name = args.name.as_str();
    let (old, new, compared) = match read(&mut registry, name, Some(args.from), true).await {
        Ok(old) => {
            let new = read(&mut registry, name, args.to, true).await;
            (old, new.map_err(status_error)?, true)
        }
        Err(s) if s.code() == Code::PermissionDenied => {
            let old = read(&mut registry, name, Some(args.from), false).await;
            let new = read(&mut registry, name, args.to, false).await;
            (
                old.map_err(status_error)?,
                new.map_err(status_error)?,
                false,
            )
        }
        Err(s) => return Err(status_error(s)),
    };
    let changes = diff(&old, &new, compared);
    say!(
        "profile \"{}\": revision {} -> {}: {}",
        args.name,
        old.revision,
        new.revision,
        match changes.len() {
            0 => "no change".to_owned(),
            1 => "1 key differs".to_owned(),
            n => format!("{n} keys differ"),
        }
    );
    for line in changes {
        say!("{line}");
    }
    if !compared {
        say!("secrets: not compared (the token lacks the secrets role)");
    }
    Ok(true)
}

/// Revision `revision` of `name` (`None`: the current one), its secrets revealed or masked.
async fn read(
    registry: &mut Registry,
    name: &str,
    revision: Option<i64>,
    reveal_secrets: bool,
) -> Result<pb::Profile, tonic::Status> {
    registry
        .get_profile(pb::GetProfileRequest {
            name: name.to_owned(),
            reveal_secrets,
            resolve_connection: false,
            revision,
        })
        .await
}

/// One line per key that differs: `+ key: value`, `- key: value`, `~ key: old -> new`; a secret
/// as `~ api_key: changed` (or `+`/`-` without its value). Unless `compared`, secrets are left out.
fn diff(old: &pb::Profile, new: &pb::Profile, compared: bool) -> Vec<String> {
    let secret = |key: &str| SecretField::ALL.iter().any(|f| f.key() == key);
    let fields = |p: &pb::Profile| -> BTreeMap<String, String> {
        llm_fields("", &p.llm.clone().unwrap_or_default())
            .into_iter()
            .filter(|(k, _)| compared || !secret(k))
            .collect()
    };
    let (before, after) = (fields(old), fields(new));
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let hidden = secret(k);
            match (before.get(k), after.get(k)) {
                (Some(a), Some(b)) if a == b => None,
                (Some(_), Some(_)) if hidden => Some(format!("~ {k}: changed")),
                (Some(a), Some(b)) => Some(format!("~ {k}: {a} -> {b}")),
                (None, Some(_)) if hidden => Some(format!("+ {k}: set")),
                (None, Some(b)) => Some(format!("+ {k}: {b}")),
                (Some(_), None) if hidden => Some(format!("- {k}: removed")),
                (Some(a), None) => Some(format!("- {k}: {a}")),
                (None, None) => None,
            }
        })
        .collect()
}
