//! profileregistry.v1.ConversationService: thin handlers over a store of conversations and profiles.
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::{Response, Status};

use super::convert::{
    binding_from_pb, conversation_from_pb, conversation_to_pb, event_to_pb, events_from_pb,
    llm_from_pb, status_from_pb,
};
use super::{conflict_policy, page_token, parse_fernet_key, secrets_out};
use crate::app::transfer::{export_conversation_files, import_conversation_files, TransferError};
use crate::app::{self, audit_secret_access};
use crate::auth::Role;
use crate::domain::{Conversation, ConversationId, LlmSource, ProfileName, Violation};
use crate::error::{invalid_argument, invalid_field};
use crate::health::async_stream;
use crate::pb;
use crate::pb::conversation_service_server::ConversationService;
use crate::store::{EventQuery, Store, StoreError};

/// The ConversationService handlers.
pub type ConversationApi = super::Api;

fn parse_id(raw: &str, field: &str) -> Result<ConversationId, Status> {
    ConversationId::parse(raw, field).map_err(|v| invalid_argument(&[v]))
}

fn not_found(id: &ConversationId) -> Status {
    Status::from(StoreError::not_found("conversation", id))
}

impl ConversationApi {
    async fn respond(
        &self,
        c: Conversation,
        resolve: bool,
        reveal: bool,
    ) -> Result<pb::Conversation, Status> {
        let resolved = if resolve {
            app::conversations::resolve(&self.store, &c, reveal).await?
        } else {
            BTreeMap::new()
        };
        Ok(conversation_to_pb(
            if reveal { c } else { c.masked() },
            resolved,
        ))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

rpcs! {
    impl ConversationService for ConversationApi {
        type WatchEventsStream = EventStream;

        fn create_conversation(self, req: pb::CreateConversationRequest) -> pb::Conversation {
            let input = req.into_inner().conversation;
            let input = conversation_from_pb(input, "conversation", &self.limits)
                .map_err(|v| invalid_argument(&v))?;
            let created = app::conversations::create(&self.store, input.conversation).await?;
            Ok(Response::new(self.respond(created, false, false).await?))
        }

        fn get_conversation(self, who, pb::GetConversationRequest { id, resolve_llms, reveal_secrets }) -> pb::Conversation {
            let id = parse_id(&id, "id")?;
            let c = self
                .store
                .get_conversation(&id)
                .await?
                .ok_or_else(|| not_found(&id))?;
            if reveal_secrets {
                audit_secret_access(&who, "reveal secrets", &id.to_string())?;
            }
            Ok(Response::new(
                self.respond(c, resolve_llms, reveal_secrets).await?,
            ))
        }

        fn list_conversations(self, pb::ListConversationsRequest { page_size, page_token, execution_status, profile }) -> pb::ListConversationsResponse {
            let size = self.limits.page_size(page_size)?;
            let status = status_from_pb(execution_status, "execution_status")
                .map_err(|v| invalid_argument(&[v]))?;
            let profile = match profile.as_str() {
                "" => None,
                p => Some(ProfileName::parse(p, "profile").map_err(|v| invalid_argument(&[v]))?),
            };
            let listing = format!(
                "conversations|{execution_status}|{}",
                profile.as_ref().map(ProfileName::as_str).unwrap_or("")
            );
            let after = page_token::decode(&self.limits.page_key, &listing, &page_token)?
                .map(|a| parse_id(&a, "page_token"))
                .transpose()?;
            let mut page = self
                .store
                .list_conversations(after, size + 1, status, profile.as_ref())
                .await?;
            let next_page_token =
                page_token::cut(&self.limits.page_key, &listing, &mut page, size, |c| {
                    c.id.to_string()
                });
            let conversations = page
                .into_iter()
                .map(|c| conversation_to_pb(c.masked(), BTreeMap::new()))
                .collect();
            Ok(Response::new(pb::ListConversationsResponse {
                conversations,
                next_page_token,
            }))
        }

        fn update_conversation(self, who, pb::UpdateConversationRequest { conversation, update_mask, expected_revision }) -> pb::Conversation {
            let blind = !who.has(Role::Secrets);
            let paths = update_mask.map(|m| m.paths).unwrap_or_default();
            let unknown = app::conversations::mask_violations(&paths);
            if !unknown.is_empty() {
                return Err(invalid_argument(&unknown));
            }
            let input = conversation_from_pb(conversation, "conversation", &self.limits)
                .map_err(|v| invalid_argument(&v))?;
            let id = input
                .id
                .ok_or_else(|| invalid_field("conversation.id", "is required"))?;
            let update = app::conversations::Update {
                paths,
                new: input.conversation,
                status_unset: input.status_unset,
            };
            let updated =
                app::conversations::update(&self.store, &id, expected_revision, update, blind).await?;
            Ok(Response::new(self.respond(updated, false, false).await?))
        }

        fn delete_conversation(self, req: pb::DeleteConversationRequest) -> pb::DeleteConversationResponse {
            let who = crate::auth::principal(&req);
            let pb::DeleteConversationRequest {
                id,
                expected_revision,
                allow_missing,
                force,
            } = req.into_inner();
            let parsed = parse_id(&id, "id")?;
            let deleted = self
                .store
                .delete_conversation(&parsed, expected_revision, allow_missing, force)
                .await?;
            if force && deleted.is_some() {
                tracing::info!(target: "audit", who = %who.name, action = "delete with force", resource = %parsed, damaged = deleted.as_ref().is_some_and(|(c, _)| c.revision == 0), "forced delete");
            }
            Ok(Response::new(pb::DeleteConversationResponse {
                id: parsed.to_string(),
                deleted: deleted.is_some(),
                events_deleted: deleted.map_or(0, |(_, n)| n),
            }))
        }

        fn switch_llm(self, who, pb::SwitchLlmRequest { id, usage_id, target, expected_revision }) -> pb::Conversation {
            let blind = !who.has(Role::Secrets);
            let id = parse_id(&id, "id")?;
            let mut violations = Vec::new();
            let source = match target {
                Some(pb::switch_llm_request::Target::Profile(p)) => binding_from_pb(
                    pb::LlmBinding {
                        source: Some(pb::llm_binding::Source::Profile(p)),
                        resolved: None,
                    },
                    "target",
                    &mut violations,
                ),
                Some(pb::switch_llm_request::Target::Llm(l)) => {
                    let llm = llm_from_pb(l, "llm", &mut violations);
                    violations.extend(llm.violations("llm"));
                    Some(LlmSource::Inline(Box::new(llm)))
                }
                None => {
                    violations.push(Violation::new("target", "set profile or llm"));
                    None
                }
            };
            let source = match source {
                Some(s) if violations.is_empty() => s,
                _ => return Err(invalid_argument(&violations)),
            };
            let switched = app::conversations::switch_llm(
                &self.store,
                &id,
                usage_id,
                source,
                expected_revision,
                blind,
            )
            .await?;
            Ok(Response::new(self.respond(switched, false, false).await?))
        }

        fn append_events(self, pb::AppendEventsRequest { conversation_id, events, expected_next_seq }) -> pb::AppendEventsResponse {
            let id = parse_id(&conversation_id, "conversation_id")?;
            let events = events_from_pb(events, &self.limits).map_err(|v| invalid_argument(&v))?;
            let (first_seq, next_seq) = self
                .store
                .append_events(&id, events, expected_next_seq)
                .await?;
            Ok(Response::new(pb::AppendEventsResponse {
                first_seq,
                next_seq,
            }))
        }

        fn list_events(self, pb::ListEventsRequest { conversation_id, page_size, page_token, after_seq, kind, source, descending }) -> pb::ListEventsResponse {
            let id = parse_id(&conversation_id, "conversation_id")?;
            let size = self.limits.page_size(page_size)?;
            if self.store.get_conversation(&id).await?.is_none() {
                return Err(not_found(&id));
            }
            let listing = format!("events|{id}|{after_seq:?}|{kind}|{source}|{descending}");
            let cursor = page_token::decode_number(&self.limits.page_key, &listing, &page_token)?;
            let mut query = EventQuery {
                after_seq,
                before_seq: None,
                kind,
                source,
                descending,
                limit: size + 1,
            };
            if let Some(c) = cursor {
                if descending {
                    query.before_seq = Some(c);
                } else {
                    query.after_seq = Some(c);
                }
            }
            let mut events = self.store.list_events(&id, &query).await?;
            let next_page_token =
                page_token::cut(&self.limits.page_key, &listing, &mut events, size, |e| {
                    e.seq.to_string()
                });
            Ok(Response::new(pb::ListEventsResponse {
                events: events.into_iter().map(event_to_pb).collect(),
                next_page_token,
            }))
        }

        fn import_conversation(self, pb::ImportConversationRequest { base_state_json, events, on_conflict, fernet_key, bind_profile, dry_run }) -> pb::ImportConversationResponse {
            let policy = conflict_policy(on_conflict)?;
            let key = parse_fernet_key(&fernet_key)?;
            let bind = match bind_profile.as_str() {
                "" => None,
                p => Some(ProfileName::parse(p, "bind_profile").map_err(|v| invalid_argument(&[v]))?),
            };
            let files: Vec<(String, String)> = events.into_iter().map(|f| (f.name, f.json)).collect();
            let (outcome, events) = import_conversation_files(
                &self.store,
                &base_state_json,
                &files,
                key.as_ref(),
                bind.as_ref(),
                policy,
                dry_run,
                &self.limits,
            )
            .await
            .map_err(|e| match e {
                TransferError::Invalid(v) => invalid_argument(&v),
                TransferError::Store(e) => e.into(),
            })?;
            let result = pb::ImportResult::from(outcome);
            Ok(Response::new(pb::ImportConversationResponse {
                id: result.name,
                outcome: result.outcome,
                reason: result.reason,
                events,
            }))
        }

        fn export_conversation(self, who, pb::ExportConversationRequest { id, secrets, fernet_key, profile_refs }) -> pb::ExportConversationResponse {
            let id = parse_id(&id, "id")?;
            let key = parse_fernet_key(&fernet_key)?;
            let secrets = secrets_out(secrets, key.as_ref())?;
            match secrets {
                crate::openhands::profile::SecretsOut::Redacted => {}
                _ => audit_secret_access(&who, "export conversation secrets", &id.to_string())?,
            }
            let (base_state_json, files) =
                export_conversation_files(&self.store, &id, secrets, profile_refs).await?;
            Ok(Response::new(pb::ExportConversationResponse {
                id: id.to_string(),
                dir_name: id.simple(),
                base_state_json,
                events: files
                    .into_iter()
                    .map(|(name, json)| pb::ConversationFile { name, json })
                    .collect(),
            }))
        }

        fn watch_events(self, pb::WatchEventsRequest { conversation_id, after_seq }) -> EventStream {
            let id = parse_id(&conversation_id, "conversation_id")?;
            if *self.shutdown.borrow() {
                return Err(Status::unavailable("the server is shutting down"));
            }
            // Subscribe before reading the stored events, so nothing falls between the two.
            let live = self.store.subscribe_events();
            if self.store.get_conversation(&id).await?.is_none() {
                return Err(not_found(&id));
            }
            let store = Arc::clone(&self.store);
            let shutdown = self.shutdown.clone();
            let stream: EventStream = Box::pin(async_stream(move |tx| {
                tail_events(store, id, after_seq, live, shutdown, tx)
            }));
            Ok(Response::new(stream))
        }
    }
}

/// The end of a watch on a conversation that was deleted.
fn gone(id: &ConversationId) -> Status {
    Status::not_found(format!(
        "conversation {id} was deleted; its events are gone"
    ))
}

/// Sends the stored events after `after_seq` a page at a time, then, each time a live batch says
/// the log grew past what was sent, the new ones from the store: every event once, in seq order.
/// Live batches carry no events, so a watcher that stops reading pins no event in memory, and one
/// that falls behind the channel's backlog just reads on from the store.
async fn tail_events(
    store: Arc<Store>,
    id: ConversationId,
    after_seq: Option<i64>,
    mut live: broadcast::Receiver<crate::store::EventBatch>,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
) {
    let mut next = after_seq.map_or(0, |s| s.saturating_add(1)).max(0);
    loop {
        loop {
            let query = EventQuery {
                after_seq: Some(next - 1),
                limit: 500,
                ..EventQuery::default()
            };
            let page = match store.list_events(&id, &query).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            if page.is_empty() {
                break;
            }
            next = page.last().map_or(next, |e| e.seq + 1);
            for e in page {
                if tx.send(Ok(event_to_pb(e))).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let batch = tokio::select! {
                r = live.recv() => r,
                _ = shutdown.changed() => return super::tell_shutdown(&tx, "watch again with after_seq").await,
                () = tx.closed() => return,
            };
            match batch {
                Ok(b) if b.conversation == id && b.deleted => {
                    let _ = tx.send(Err(gone(&id))).await;
                    return;
                }
                Ok(b) if b.conversation == id && b.next_seq > next => break,
                Ok(_) => {}
                // Missed notifications lose no event (the store has them all), but may hide a
                // deletion: look.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !matches!(store.get_conversation(&id).await, Ok(Some(_))) {
                        let _ = tx.send(Err(gone(&id))).await;
                        return;
                    }
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
