//! One campaign client: it owns a few profiles and one conversation, so it alone knows what they
//! must hold. Every acknowledged write updates its model; a call whose outcome is unknown (the
//! server died under it) leaves the write pending, and the next read must find either the state
//! before it or the whole state after it, never anything else.
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use profile_registry::pb;
use profile_registry::pb::conversation_service_client::ConversationServiceClient;
use profile_registry::pb::profile_service_client::ProfileServiceClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::Shared;

/// What one profile holds, as far as the campaign can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileView {
    pub revision: i64,
    pub model: String,
}

/// The conversation's agent LLM: bound to a profile, or inline with a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agent {
    Profile(String),
    Inline(String),
}

/// What the client's conversation holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationView {
    pub revision: i64,
    pub agent: Agent,
    pub events: i64,
}

/// Everything one client owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub profiles: BTreeMap<String, ProfileView>,
    pub conversation: Option<ConversationView>,
}

/// One write of the workload.
#[derive(Clone, Debug)]
enum Op {
    Update { name: String, model: String },
    Delete { name: String },
    Rename { from: String, to: String },
    CreateConversation { model: String },
    Switch { agent: Agent },
    Append { count: i64 },
    Import { names: Vec<String>, model: String },
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Update { .. } => "UpdateProfile",
            Op::Delete { .. } => "DeleteProfile",
            Op::Rename { .. } => "RenameProfile",
            Op::CreateConversation { .. } => "CreateConversation",
            Op::Switch { .. } => "SwitchLlm",
            Op::Append { .. } => "AppendEvents",
            Op::Import { .. } => "ImportProfiles",
        }
    }

    /// The state after this write, applied whole to `before`.
    fn apply(&self, before: &View) -> View {
        let mut v = before.clone();
        match self {
            Op::Update { name, model } => put(&mut v, name, model),
            Op::Import { names, model } => {
                for n in names {
                    put(&mut v, n, model);
                }
            }
            Op::Delete { name } => {
                v.profiles.remove(name);
            }
            Op::Rename { from, to } => {
                if let Some(mut p) = v.profiles.remove(from) {
                    p.revision += 1;
                    v.profiles.insert(to.clone(), p);
                }
                if let Some(c) = v.conversation.as_mut() {
                    if c.agent == Agent::Profile(from.clone()) {
                        c.agent = Agent::Profile(to.clone());
                        c.revision += 1;
                    }
                }
            }
            Op::CreateConversation { model } => {
                v.conversation = Some(ConversationView {
                    revision: 1,
                    agent: Agent::Inline(model.clone()),
                    events: 0,
                });
            }
            Op::Switch { agent } => {
                if let Some(c) = v.conversation.as_mut() {
                    c.agent = agent.clone();
                    c.revision += 1;
                }
            }
            Op::Append { count } => {
                if let Some(c) = v.conversation.as_mut() {
                    c.events += count;
                }
            }
        }
        v
    }
}

fn put(v: &mut View, name: &str, model: &str) {
    let revision = v.profiles.get(name).map_or(1, |p| p.revision + 1);
    v.profiles.insert(
        name.to_owned(),
        ProfileView {
            revision,
            model: model.to_owned(),
        },
    );
}

/// Whether a failed call may or may not have been applied (the server went away under it).
fn outcome_unknown(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::DeadlineExceeded
    ) || s.message().contains("shutting down")
        // tonic's name for a connection that closed under the request.
        || (s.code() == Code::Internal && s.message().starts_with("h2 protocol error"))
}

fn timed<T>(t: T) -> Request<T> {
    let mut r = Request::new(t);
    r.set_timeout(Duration::from_secs(5));
    r
}

pub struct Client {
    index: usize,
    rng: StdRng,
    model: View,
    conversation_id: String,
    counter: u64,
    profiles: ProfileServiceClient<Channel>,
    conversations: ConversationServiceClient<Channel>,
    addr: std::net::SocketAddr,
    checked_generation: u64,
    shared: Arc<Shared>,
}

impl Client {
    pub fn new(index: usize, seed: u64, shared: Arc<Shared>) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
        let conversation_id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        let addr = *shared.addr.lock().unwrap();
        let channel = channel(addr);
        Self {
            index,
            rng,
            model: View::default(),
            conversation_id: conversation_id.to_string(),
            counter: 0,
            profiles: ProfileServiceClient::new(channel.clone()),
            conversations: ConversationServiceClient::new(channel),
            addr,
            checked_generation: 0,
            shared,
        }
    }

    fn name(&self, slot: &str) -> String {
        format!("cam{}-{slot}", self.index)
    }

    fn slots(&self) -> Vec<String> {
        ["p0", "p1", "p2", "ra", "rb", "imp0", "imp1"]
            .iter()
            .map(|s| self.name(s))
            .collect()
    }

    fn reconnect_if_moved(&mut self) {
        let addr = *self.shared.addr.lock().unwrap();
        if addr != self.addr {
            let ch = channel(addr);
            self.profiles = ProfileServiceClient::new(ch.clone());
            self.conversations = ConversationServiceClient::new(ch);
            self.addr = addr;
        }
    }

    /// Runs writes until told to stop; then checks the final state once more.
    pub async fn run(mut self) {
        let mut pending: Option<Op> = None;
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.reconnect_if_moved();
            let generation = self.shared.generation.load(Ordering::SeqCst);
            if pending.is_some() || generation != self.checked_generation {
                if !self.reconcile(pending.as_ref()).await {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    continue;
                }
                pending = None;
                self.checked_generation = generation;
            }
            let op = self.next_op();
            match self.perform(&op).await {
                Ok(()) => self.shared.count(op.kind(), "OK"),
                Err(s) if outcome_unknown(&s) => {
                    self.shared.count(op.kind(), "unknown");
                    self.shared.record(format!(
                        "c{} {op:?}: {:?} (outcome unknown)",
                        self.index,
                        s.code()
                    ));
                    pending = Some(op);
                }
                Err(s) => {
                    self.shared.count(op.kind(), "refused");
                    self.shared.violation(format!(
                        "c{}: {op:?} was refused: {:?} {} (model: {:?})",
                        self.index,
                        s.code(),
                        s.message(),
                        self.model
                    ));
                    // Learn what is stored so that one fault does not cascade.
                    pending = Some(op);
                }
            }
        }
        // The final check, against the last server.
        for _ in 0..200 {
            self.reconnect_if_moved();
            if self.reconcile(pending.as_ref()).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.shared.violation(format!(
            "c{}: could not read its state at the end",
            self.index
        ));
    }

    fn next_op(&mut self) -> Op {
        self.counter += 1;
        let model = format!("m-c{}-{}", self.index, self.counter);
        let Some(conv) = self.model.conversation.clone() else {
            return Op::CreateConversation { model };
        };
        let renamed = if self.model.profiles.contains_key(&self.name("ra")) {
            Some((self.name("ra"), self.name("rb")))
        } else if self.model.profiles.contains_key(&self.name("rb")) {
            Some((self.name("rb"), self.name("ra")))
        } else {
            None
        };
        match self.rng.random_range(0..100) {
            0..30 => {
                let slot = ["p0", "p1", "p2"][self.rng.random_range(0..3)];
                Op::Update {
                    name: self.name(slot),
                    model,
                }
            }
            30..38 => {
                let slot = ["p0", "p1", "p2"][self.rng.random_range(0..3)];
                let name = self.name(slot);
                if self.model.profiles.contains_key(&name) {
                    Op::Delete { name }
                } else {
                    Op::Update { name, model }
                }
            }
            38..50 => match renamed {
                Some((from, to)) => Op::Rename { from, to },
                None => Op::Update {
                    name: self.name("ra"),
                    model,
                },
            },
            50..62 => match (&conv.agent, renamed) {
                (Agent::Inline(_), Some((bound, _))) => Op::Switch {
                    agent: Agent::Profile(bound),
                },
                _ => Op::Switch {
                    agent: Agent::Inline(model),
                },
            },
            62..90 => Op::Append {
                count: [1, 1, 2, 5, 20][self.rng.random_range(0..5)],
            },
            _ => Op::Import {
                names: vec![self.name("imp0"), self.name("imp1")],
                model,
            },
        }
    }

    /// Sends one write; on success checks the reply against the model and moves the model on.
    async fn perform(&mut self, op: &Op) -> Result<(), Status> {
        let after = op.apply(&self.model);
        let conv_rev = self.model.conversation.as_ref().map(|c| c.revision);
        let replied: Vec<(String, i64)> = match op {
            Op::Update { name, model } => {
                let expected = self.model.profiles.get(name).map_or(0, |p| p.revision);
                let p = self
                    .profiles
                    .update_profile(timed(pb::UpdateProfileRequest {
                        profile: Some(profile(name, model)),
                        allow_missing: true,
                        expected_revision: Some(expected),
                    }))
                    .await?
                    .into_inner();
                vec![(p.name, p.revision)]
            }
            Op::Delete { name } => {
                let expected = self.model.profiles.get(name).map(|p| p.revision);
                let r = self
                    .profiles
                    .delete_profile(timed(pb::DeleteProfileRequest {
                        name: name.clone(),
                        expected_revision: expected,
                        allow_missing: false,
                        force: false,
                        purge: false,
                    }))
                    .await?
                    .into_inner();
                vec![(format!("deleted {}", r.name), r.revision)]
            }
            Op::Rename { from, to } => {
                let p = self
                    .profiles
                    .rename_profile(timed(pb::RenameProfileRequest {
                        name: from.clone(),
                        new_name: to.clone(),
                    }))
                    .await?
                    .into_inner();
                vec![(p.name, p.revision)]
            }
            Op::CreateConversation { model } => {
                let c = self
                    .conversations
                    .create_conversation(timed(pb::CreateConversationRequest {
                        conversation: Some(pb::Conversation {
                            id: self.conversation_id.clone(),
                            llms: [("agent".to_owned(), inline(model))].into(),
                            title: format!("campaign client {}", self.index),
                            ..Default::default()
                        }),
                    }))
                    .await?
                    .into_inner();
                vec![("conversation".into(), c.revision)]
            }
            Op::Switch { agent } => {
                let target = match agent {
                    Agent::Profile(p) => pb::switch_llm_request::Target::Profile(p.clone()),
                    Agent::Inline(m) => pb::switch_llm_request::Target::Llm(pb::LlmConfig {
                        model: m.clone(),
                        ..Default::default()
                    }),
                };
                let c = self
                    .conversations
                    .switch_llm(timed(pb::SwitchLlmRequest {
                        id: self.conversation_id.clone(),
                        usage_id: "agent".into(),
                        target: Some(target),
                        expected_revision: conv_rev,
                    }))
                    .await?
                    .into_inner();
                vec![("conversation".into(), c.revision)]
            }
            Op::Append { count } => {
                let next = self.model.conversation.as_ref().map_or(0, |c| c.events);
                let events = (next..next + count)
                    .map(|seq| event(&format!("c{}-e{seq}", self.index)))
                    .collect();
                let r = self
                    .conversations
                    .append_events(timed(pb::AppendEventsRequest {
                        conversation_id: self.conversation_id.clone(),
                        events,
                        expected_next_seq: Some(next),
                    }))
                    .await?
                    .into_inner();
                vec![("next_seq".into(), r.next_seq)]
            }
            Op::Import { names, model } => {
                let documents = names
                    .iter()
                    .map(|n| pb::ProfileDocument {
                        name: n.clone(),
                        json: format!("{{\"model\": \"{model}\"}}"),
                    })
                    .collect();
                let r = self
                    .profiles
                    .import_profiles(timed(pb::ImportProfilesRequest {
                        documents,
                        on_conflict: pb::import_profiles_request::OnConflict::Overwrite as i32,
                        ..Default::default()
                    }))
                    .await?
                    .into_inner();
                r.results
                    .into_iter()
                    .map(|x| (x.name, x.revision))
                    .collect()
            }
        };
        let expected: Vec<(String, i64)> = match op {
            Op::Update { name, .. } | Op::Rename { to: name, .. } => {
                vec![(name.clone(), after.profiles[name].revision)]
            }
            Op::Delete { name } => {
                vec![(
                    format!("deleted {name}"),
                    self.model.profiles[name].revision,
                )]
            }
            Op::CreateConversation { .. } | Op::Switch { .. } => vec![(
                "conversation".into(),
                after.conversation.as_ref().map_or(0, |c| c.revision),
            )],
            Op::Append { .. } => vec![(
                "next_seq".into(),
                after.conversation.as_ref().map_or(0, |c| c.events),
            )],
            Op::Import { names, .. } => names
                .iter()
                .map(|n| (n.clone(), after.profiles[n].revision))
                .collect(),
        };
        if replied != expected {
            self.shared.violation(format!(
                "c{}: {op:?} replied {replied:?}, the model expected {expected:?}",
                self.index
            ));
        }
        self.shared
            .record(format!("c{} {op:?}: OK {replied:?}", self.index));
        self.model = after;
        Ok(())
    }

    /// Reads everything this client owns and checks it against the model (or, with a write whose
    /// outcome is unknown, against the model with that write applied whole). Returns false when the
    /// server could not be read (try again later).
    async fn reconcile(&mut self, pending: Option<&Op>) -> bool {
        let actual = match self.read().await {
            Ok(v) => v,
            Err(problem) => {
                if let Some(p) = problem {
                    self.shared.violation(format!("c{}: {p}", self.index));
                    return true;
                }
                return false;
            }
        };
        if actual == self.model {
            return true;
        }
        if let Some(op) = pending {
            if actual == op.apply(&self.model) {
                self.shared
                    .record(format!("c{} {op:?}: found applied", self.index));
                self.model = actual;
                return true;
            }
        }
        self.shared.violation(format!(
            "c{}: stored state differs from every acknowledged history\n  expected {:?}\n  pending  {pending:?}\n  found    {actual:?}",
            self.index, self.model
        ));
        self.model = actual;
        true
    }

    /// The stored state of everything this client owns. Err(None): the server could not be
    /// reached; Err(Some(problem)): the server answered something impossible.
    async fn read(&mut self) -> Result<View, Option<String>> {
        let mut view = View::default();
        for name in self.slots() {
            match self
                .profiles
                .get_profile(timed(pb::GetProfileRequest {
                    name: name.clone(),
                    reveal_secrets: false,
                    resolve_connection: false,
                    revision: None,
                }))
                .await
            {
                Ok(p) => {
                    let p = p.into_inner();
                    let model = p.llm.map(|l| l.model).unwrap_or_default();
                    view.profiles.insert(
                        name,
                        ProfileView {
                            revision: p.revision,
                            model,
                        },
                    );
                }
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) if outcome_unknown(&s) => return Err(None),
                Err(s) => return Err(Some(format!("GetProfile {name}: {s:?}"))),
            }
        }
        let c = match self
            .conversations
            .get_conversation(timed(pb::GetConversationRequest {
                id: self.conversation_id.clone(),
                ..Default::default()
            }))
            .await
        {
            Ok(c) => c.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Ok(view),
            Err(s) if outcome_unknown(&s) => return Err(None),
            Err(s) => return Err(Some(format!("GetConversation: {s:?}"))),
        };
        let agent = match c.llms.get("agent").and_then(|b| b.source.clone()) {
            Some(pb::llm_binding::Source::Profile(p)) => Agent::Profile(p),
            Some(pb::llm_binding::Source::Inline(l)) => Agent::Inline(l.model),
            None => return Err(Some("the conversation lost its agent LLM".into())),
        };
        // The event log: contiguous from 0, each event where its client put it.
        let mut seq = 0;
        let mut token = String::new();
        loop {
            let page = match self
                .conversations
                .list_events(timed(pb::ListEventsRequest {
                    conversation_id: self.conversation_id.clone(),
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                }))
                .await
            {
                Ok(p) => p.into_inner(),
                Err(s) if outcome_unknown(&s) => return Err(None),
                Err(s) => return Err(Some(format!("ListEvents: {s:?}"))),
            };
            for e in page.events {
                let id = format!("c{}-e{seq}", self.index);
                if e.seq != seq || e.id != id {
                    return Err(Some(format!(
                        "event log not contiguous: expected seq {seq} id {id}, found seq {} id {}",
                        e.seq, e.id
                    )));
                }
                seq += 1;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        if seq != c.event_count {
            return Err(Some(format!(
                "event_count {} but {seq} events listed",
                c.event_count
            )));
        }
        view.conversation = Some(ConversationView {
            revision: c.revision,
            agent,
            events: seq,
        });
        Ok(view)
    }
}

pub fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a valid address")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

fn profile(name: &str, model: &str) -> pb::Profile {
    pb::Profile {
        name: name.into(),
        llm: Some(pb::LlmConfig {
            model: model.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn inline(model: &str) -> pb::LlmBinding {
    pb::LlmBinding {
        source: Some(pb::llm_binding::Source::Inline(pb::LlmConfig {
            model: model.into(),
            ..Default::default()
        })),
        resolved: None,
    }
}

fn event(id: &str) -> pb::Event {
    pb::Event {
        id: id.into(),
        kind: "MessageEvent".into(),
        source: "user".into(),
        body: Some(prost_types::Struct {
            fields: [
                ("id".to_owned(), prost_types::Value::from(id.to_owned())),
                (
                    "kind".to_owned(),
                    prost_types::Value::from("MessageEvent".to_owned()),
                ),
            ]
            .into(),
        }),
        ..Default::default()
    }
}
