//! Table-driven cases for the rules both backends apply: each test is a table of (input, expected
//! outcome) run in a loop, and every assert names its case.
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use super::*;
use crate::domain::{ExecutionStatus, Secret, SECRET_MASK};

use ConflictPolicy::{Fail, Overwrite, Skip};

/// When a stored record was created and last changed: long ago, never mistaken for now.
const CREATED: Timestamp = Timestamp {
    seconds: 1_000,
    nanos: 5,
};
const UPDATED: Timestamp = Timestamp {
    seconds: 2_000,
    nanos: 7,
};
/// How the tables write "the time the rule ran" (see [`settle`]).
const NOW: Timestamp = Timestamp {
    seconds: -1,
    nanos: 0,
};
const ALL: &[ConflictPolicy] = &[Skip, Overwrite, Fail];

/// Runs `f`; its result and the span of time it ran in.
fn timed<T>(f: impl FnOnce() -> T) -> (T, RangeInclusive<Timestamp>) {
    let before = Timestamp::now();
    let out = f();
    (out, before..=Timestamp::now())
}

/// A time within `span` (the rule read the clock) becomes [`NOW`]; any other stays as it is.
fn settle(t: &mut Timestamp, span: &RangeInclusive<Timestamp>) {
    if span.contains(t) {
        *t = NOW;
    }
}

/// Asserts that `got` is exactly `want` and that a refusal's message names `resource`. Values
/// compare by `==`: their Debug text masks secrets.
#[track_caller]
fn assert_result<T: Debug + PartialEq>(
    case: &str,
    got: Result<T, StoreError>,
    want: Result<T, StoreError>,
    resource: &str,
) {
    match (got, want) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{case}"),
        (Err(got), Err(want)) => {
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{case}");
            let message = got.to_string();
            assert!(
                message.contains(resource),
                "{case}: {message} names no {resource}"
            );
        }
        (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
    }
}

fn name(raw: &str) -> ProfileName {
    ProfileName::parse(raw, "name").expect("a valid name")
}

fn llm(model: &str) -> LlmConfig {
    LlmConfig {
        model: model.into(),
        ..Default::default()
    }
}

/// `model` with an api key.
fn keyed(model: &str, key: &str) -> LlmConfig {
    LlmConfig {
        api_key: Some(Secret::new(key)),
        ..llm(model)
    }
}

/// `model` with one extra key, its value given as JSON text.
fn extra(model: &str, key: &str, json: &str) -> LlmConfig {
    let mut l = llm(model);
    l.extra
        .insert(key.into(), serde_json::from_str(json).expect("JSON"));
    l
}

/// `model` knowing the key order of its document.
fn ordered(model: &str, keys: &[&str]) -> LlmConfig {
    LlmConfig {
        key_order: keys.iter().map(|k| (*k).to_owned()).collect(),
        ..llm(model)
    }
}

/// A write by a caller who may not read secrets.
fn blind(l: LlmConfig) -> LlmConfig {
    LlmConfig {
        blind_write: true,
        ..l
    }
}

/// A profile as stored (or as written, with `create_time` [`NOW`] when the rule created it).
fn profile(
    n: &str,
    llm: LlmConfig,
    revision: i64,
    create_time: Timestamp,
    update_time: Timestamp,
) -> Profile {
    Profile {
        name: name(n),
        llm,
        revision,
        create_time,
        update_time,
        update_principal: BY.to_owned(),
    }
}

/// The principal of every write in these tests.
const BY: &str = "tester";

fn stored(n: &str, llm: LlmConfig, revision: i64) -> Profile {
    profile(n, llm, revision, CREATED, UPDATED)
}

fn id(n: u8) -> ConversationId {
    ConversationId::from_bytes([n; 16])
}

fn to(profile: &str) -> LlmSource {
    LlmSource::Profile(name(profile))
}

fn inline(model: &str) -> LlmSource {
    LlmSource::Inline(Box::new(llm(model)))
}

fn llms(usages: Vec<(&str, LlmSource)>) -> BTreeMap<String, LlmSource> {
    usages.into_iter().map(|(u, s)| (u.to_owned(), s)).collect()
}

fn state(json: &str) -> Map<String, Value> {
    serde_json::from_str(json).expect("a JSON object")
}

const TITLE: &str = "fix the build";

/// A stored conversation at `revision`: agent bound to "gpt", 3 events.
fn conversation(revision: i64) -> Conversation {
    Conversation {
        id: id(7),
        llms: llms(vec![("agent", to("gpt"))]),
        execution_status: ExecutionStatus::Running,
        title: TITLE.into(),
        tags: [("env".to_owned(), "dev".to_owned())].into(),
        state: state(r#"{"max_iterations": 50}"#),
        revision,
        create_time: CREATED,
        update_time: UPDATED,
        event_count: 3,
    }
}

fn mismatch(kind: &'static str, name: &str, expected: i64, actual: i64) -> StoreError {
    StoreError::RevisionMismatch {
        kind,
        name: name.into(),
        expected,
        actual,
    }
}

/// An import outcome without its name, as the tables write it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Created(i64),
    Updated(i64),
    Unchanged(i64),
    Skipped(String),
}

impl From<ImportOutcome> for Got {
    fn from(o: ImportOutcome) -> Self {
        match o.outcome {
            Outcome::Created => Self::Created(o.revision),
            Outcome::Updated => Self::Updated(o.revision),
            Outcome::Unchanged => Self::Unchanged(o.revision),
            Outcome::Skipped | Outcome::Invalid => Self::Skipped(o.reason),
        }
    }
}

fn skipped(why: &str) -> Got {
    Got::Skipped(why.into())
}

mod conversations;
mod import;
mod names;
mod put;
