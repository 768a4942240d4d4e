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
    }
}

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

#[test]
fn not_found_names_the_resource() {
    let cases = [
        ("profile", not_found(&name("gpt-4o")), "profile", "gpt-4o"),
        (
            "conversation",
            conversation_not_found(&id(1)),
            "conversation",
            "01010101-0101-0101-0101-010101010101",
        ),
    ];
    for (case, got, kind, resource) in cases {
        let want = StoreError::NotFound {
            kind,
            name: resource.into(),
        };
        assert_result::<()>(
            case,
            Err(got),
            Err(want),
            &format!("{kind} \"{resource}\" not found"),
        );
    }
}

#[test]
fn revision_checks_of_profiles_and_conversations() {
    // (case, stored revision, expected revision, Some(expected) when refused)
    let cases = [
        ("no expectation", 3, None, None),
        ("the stored revision", 3, Some(3), None),
        ("a stale revision", 3, Some(2), Some(2)),
        ("a revision ahead", 3, Some(4), Some(4)),
        ("0 (must not exist) over a stored one", 3, Some(0), Some(0)),
        ("a negative revision", 3, Some(-1), Some(-1)),
        ("0 over a damaged placeholder", 0, Some(0), None),
        ("1 over a damaged placeholder", 0, Some(1), Some(1)),
    ];
    for (case, revision, expected, refused) in cases {
        let want = |kind, name: &str| match refused {
            Some(e) => Err(mismatch(kind, name, e, revision)),
            None => Ok(()),
        };
        let p = stored("gpt", llm("gpt-4o"), revision);
        let got = check_revision(&p, expected);
        assert_result(
            &format!("profile: {case}"),
            got,
            want("profile", "gpt"),
            "\"gpt\"",
        );
        let c = conversation(revision);
        let got = check_conversation_revision(&c, expected);
        let cid = c.id.to_string();
        assert_result(
            &format!("conversation: {case}"),
            got,
            want("conversation", &cid),
            &cid,
        );
    }
}

/// What a put of `llm` under "gpt" plans, as the backends report it: unchanged, the stored
/// "gpt" as it is; created now; or updated from the stored "gpt" (created at [`CREATED`]).
fn planned(outcome: PutOutcome, revision: i64, llm: LlmConfig) -> (Profile, PutOutcome) {
    let p = match outcome {
        PutOutcome::Unchanged => stored("gpt", llm, revision),
        PutOutcome::Created => profile("gpt", llm, revision, NOW, NOW),
        PutOutcome::Updated => profile("gpt", llm, revision, CREATED, NOW),
    };
    (p, outcome)
}

/// Runs `plan_put` of `llm` under "gpt" over `old`; its plan as the backends report it.
fn put(
    old: Option<Profile>,
    llm: LlmConfig,
    mode: PutMode,
    expected: Option<i64>,
) -> Result<(Profile, PutOutcome), StoreError> {
    let (got, span) = timed(|| super::plan_put(old, name("gpt"), llm, mode, expected));
    got.map(|plan| match plan {
        PutPlan::Unchanged(p) => (p, PutOutcome::Unchanged),
        PutPlan::Write(mut p, outcome) => {
            settle(&mut p.create_time, &span);
            settle(&mut p.update_time, &span);
            (p, outcome)
        }
    })
}

#[test]
fn plan_put_mode_and_revision() {
    use PutMode::{Create, Update, Upsert};
    use PutOutcome::{Created, Unchanged, Updated};
    let exists = || StoreError::AlreadyExists {
        kind: "profile",
        name: "gpt".into(),
    };
    let missing = || not_found(&name("gpt"));
    let stale = |expected, actual| mismatch("profile", "gpt", expected, actual);
    // (revision of the stored "gpt" (gpt-4o), the put's model, mode, expected revision, outcome
    // and revision); each case is named by its inputs.
    let cases = [
        (None, "o3", Create, None, Ok((Created, 1))),
        (None, "o3", Create, Some(0), Ok((Created, 1))),
        (Some(3), "o3", Create, None, Err(exists())),
        (Some(3), "gpt-4o", Create, None, Err(exists())),
        (Some(3), "o3", Create, Some(3), Err(exists())),
        (None, "o3", Update, None, Err(missing())),
        (None, "o3", Update, Some(0), Err(missing())),
        (Some(3), "o3", Update, None, Ok((Updated, 4))),
        (Some(3), "o3", Update, Some(3), Ok((Updated, 4))),
        (Some(3), "o3", Update, Some(2), Err(stale(2, 3))),
        (Some(3), "o3", Update, Some(4), Err(stale(4, 3))),
        (Some(0), "o3", Update, Some(0), Ok((Updated, 1))),
        (None, "o3", Upsert, None, Ok((Created, 1))),
        (None, "o3", Upsert, Some(0), Ok((Created, 1))),
        (None, "o3", Upsert, Some(1), Err(stale(1, 0))),
        (None, "o3", Upsert, Some(-1), Err(stale(-1, 0))),
        (Some(3), "o3", Upsert, None, Ok((Updated, 4))),
        (Some(3), "o3", Upsert, Some(3), Ok((Updated, 4))),
        (Some(3), "o3", Upsert, Some(0), Err(stale(0, 3))),
        (Some(3), "o3", Upsert, Some(-1), Err(stale(-1, 3))),
        (Some(3), "gpt-4o", Upsert, None, Ok((Unchanged, 3))),
        (Some(3), "gpt-4o", Update, Some(3), Ok((Unchanged, 3))),
        (Some(3), "gpt-4o", Update, Some(2), Err(stale(2, 3))),
        (Some(3), "gpt-4o", Upsert, Some(0), Err(stale(0, 3))),
    ];
    for (revision, model, mode, expected, want) in cases {
        let case = format!("{mode:?} of {model} over {revision:?}, expecting {expected:?}");
        let old = revision.map(|r| stored("gpt", llm("gpt-4o"), r));
        let want = want.map(|(outcome, revision)| planned(outcome, revision, llm(model)));
        assert_result(&case, put(old, llm(model), mode, expected), want, "\"gpt\"");
    }
}

#[test]
fn plan_put_merges_secrets_and_keeps_stored_forms() {
    let m = "gpt-4o";
    let aws = LlmConfig {
        aws_access_key_id: Some(Secret::new("AKIA")),
        aws_secret_access_key: Some(Secret::new("s3cret")),
        ..llm(m)
    };
    // (case, the stored "gpt" (revision 3), the upsert's llm, the llm written: None when unchanged)
    let cases = [
        (
            "the mask keeps the stored key",
            Some(keyed(m, "sk-old")),
            keyed(m, SECRET_MASK),
            None,
        ),
        (
            "the mask keeps the stored key beside a change",
            Some(keyed(m, "sk-old")),
            keyed("o3", SECRET_MASK),
            Some(keyed("o3", "sk-old")),
        ),
        (
            "the mask over no stored key sets none",
            Some(llm(m)),
            keyed("o3", SECRET_MASK),
            Some(llm("o3")),
        ),
        (
            "the mask with nothing stored creates no key",
            None,
            keyed(m, SECRET_MASK),
            Some(llm(m)),
        ),
        (
            "a blank key clears the stored one",
            Some(keyed(m, "sk-old")),
            keyed(m, "  "),
            Some(llm(m)),
        ),
        (
            "an empty key clears the stored one",
            Some(keyed(m, "sk-old")),
            keyed(m, ""),
            Some(llm(m)),
        ),
        (
            "a new key replaces the stored one",
            Some(keyed(m, "sk-old")),
            keyed(m, "sk-new"),
            Some(keyed(m, "sk-new")),
        ),
        (
            "each secret field merges on its own",
            Some(aws.clone()),
            LlmConfig {
                aws_access_key_id: Some(Secret::new(SECRET_MASK)),
                aws_secret_access_key: Some(Secret::new(" ")),
                aws_session_token: Some(Secret::new("tok")),
                ..llm(m)
            },
            Some(LlmConfig {
                aws_secret_access_key: None,
                aws_session_token: Some(Secret::new("tok")),
                ..aws
            }),
        ),
        (
            "a blind write of the same key is never unchanged",
            Some(keyed(m, "sk-old")),
            blind(keyed(m, "sk-old")),
            Some(keyed(m, "sk-old")),
        ),
        (
            "a blind create is written as not blind",
            None,
            blind(keyed(m, "sk-new")),
            Some(keyed(m, "sk-new")),
        ),
        (
            "no key order keeps the stored one",
            Some(ordered(m, &["model"])),
            llm(m),
            None,
        ),
        (
            "another key order is a change",
            Some(ordered(m, &["model", "x"])),
            ordered(m, &["x", "model"]),
            Some(ordered(m, &["x", "model"])),
        ),
        (
            "an equal number keeps its stored text",
            Some(extra(m, "retries", "8.0")),
            extra(m, "retries", "8"),
            None,
        ),
        (
            "another number is a change",
            Some(extra(m, "retries", "8.0")),
            extra(m, "retries", "9"),
            Some(extra(m, "retries", "9")),
        ),
    ];
    for (case, old, llm, written) in cases {
        let want = match (&old, written) {
            (Some(old), None) => planned(PutOutcome::Unchanged, 3, old.clone()),
            (Some(_), Some(l)) => planned(PutOutcome::Updated, 4, l),
            (None, Some(l)) => planned(PutOutcome::Created, 1, l),
            (None, None) => unreachable!("{case}: nothing stored is never unchanged"),
        };
        let old = old.map(|l| stored("gpt", l, 3));
        assert_result(
            case,
            put(old, llm, PutMode::Upsert, None),
            Ok(want),
            "\"gpt\"",
        );
    }
}

const SKIP_OTHER: &str = "a profile of that name exists with other content (on_conflict SKIP)";

fn skipped(why: &str) -> ImportOutcome {
    ImportOutcome::Skipped(why.into())
}

/// A profile an import writes (updated now, created at `create_time`).
fn wrote(n: &str, revision: i64, llm: LlmConfig, create_time: Timestamp) -> Profile {
    profile(n, llm, revision, create_time, NOW)
}

/// (case, policies, stored profiles, items, outcomes, writes)
type ImportCase = (
    &'static str,
    &'static [ConflictPolicy],
    Vec<Profile>,
    Vec<(&'static str, LlmConfig)>,
    Vec<ImportOutcome>,
    Vec<Profile>,
);

#[test]
fn plan_import() {
    use ImportOutcome::{Created, Unchanged, Updated};
    let a = |l: LlmConfig| vec![stored("a", l, 3)];
    let cases: Vec<ImportCase> = vec![
        (
            "nothing to import",
            ALL,
            a(llm("m1")),
            vec![],
            vec![],
            vec![],
        ),
        (
            "new names are created",
            ALL,
            a(llm("m1")),
            vec![("b", llm("m2")), ("c", llm("m3"))],
            vec![Created(1), Created(1)],
            vec![wrote("b", 1, llm("m2"), NOW), wrote("c", 1, llm("m3"), NOW)],
        ),
        (
            "same content is unchanged",
            &[Skip, Overwrite],
            a(llm("m1")),
            vec![("a", llm("m1"))],
            vec![Unchanged(3)],
            vec![],
        ),
        (
            "same content fails the whole import under FAIL",
            &[Fail],
            a(llm("m1")),
            vec![("a", llm("m1")), ("b", llm("m2"))],
            vec![skipped(FAIL_EXISTS), skipped(FAIL_OTHER)],
            vec![],
        ),
        (
            "other content is skipped under SKIP, the rest written",
            &[Skip],
            a(llm("m1")),
            vec![("a", llm("m9")), ("b", llm("m2"))],
            vec![skipped(SKIP_OTHER), Created(1)],
            vec![wrote("b", 1, llm("m2"), NOW)],
        ),
        (
            "other content is replaced under OVERWRITE",
            &[Overwrite],
            a(llm("m1")),
            vec![("a", llm("m9")), ("b", llm("m2"))],
            vec![Updated(4), Created(1)],
            vec![
                wrote("a", 4, llm("m9"), CREATED),
                wrote("b", 1, llm("m2"), NOW),
            ],
        ),
        (
            "other content fails the whole import under FAIL",
            &[Fail],
            a(llm("m1")),
            vec![("b", llm("m2")), ("a", llm("m9"))],
            vec![skipped(FAIL_OTHER), skipped(FAIL_EXISTS)],
            vec![],
        ),
        (
            "a new name twice with the same content",
            &[Skip, Overwrite],
            vec![],
            vec![("a", llm("m1")), ("a", llm("m1"))],
            vec![Created(1), Unchanged(1)],
            vec![wrote("a", 1, llm("m1"), NOW)],
        ),
        (
            "a new name twice under SKIP keeps the first",
            &[Skip],
            vec![],
            vec![("a", llm("m1")), ("a", llm("m2"))],
            vec![Created(1), skipped(SKIP_OTHER)],
            vec![wrote("a", 1, llm("m1"), NOW)],
        ),
        (
            "a new name twice under OVERWRITE writes both in order",
            &[Overwrite],
            vec![],
            vec![("a", llm("m1")), ("a", llm("m2"))],
            vec![Created(1), Updated(2)],
            vec![wrote("a", 1, llm("m1"), NOW), wrote("a", 2, llm("m2"), NOW)],
        ),
        (
            "a new name twice under FAIL: the first counts as existing",
            &[Fail],
            vec![],
            vec![("a", llm("m1")), ("b", llm("m2")), ("a", llm("m1"))],
            vec![
                skipped(FAIL_OTHER),
                skipped(FAIL_OTHER),
                skipped(FAIL_EXISTS),
            ],
            vec![],
        ),
        (
            "a stored name twice under OVERWRITE",
            &[Overwrite],
            a(llm("m1")),
            vec![("a", llm("m1")), ("a", llm("m2"))],
            vec![Unchanged(3), Updated(4)],
            vec![wrote("a", 4, llm("m2"), CREATED)],
        ),
        (
            "the mask keeps the stored key",
            &[Skip, Overwrite],
            a(keyed("m1", "sk-old")),
            vec![("a", keyed("m1", SECRET_MASK))],
            vec![Unchanged(3)],
            vec![],
        ),
        (
            "the mask with nothing stored creates no key",
            ALL,
            vec![],
            vec![("a", keyed("m1", SECRET_MASK))],
            vec![Created(1)],
            vec![wrote("a", 1, llm("m1"), NOW)],
        ),
        (
            "a blank key clears the stored one",
            &[Overwrite],
            a(keyed("m1", "sk-old")),
            vec![("a", keyed("m1", " "))],
            vec![Updated(4)],
            vec![wrote("a", 4, llm("m1"), CREATED)],
        ),
        (
            "a blind write of the same key is never unchanged",
            &[Overwrite],
            a(keyed("m1", "sk-old")),
            vec![("a", blind(keyed("m1", "sk-old")))],
            vec![Updated(4)],
            vec![wrote("a", 4, keyed("m1", "sk-old"), CREATED)],
        ),
        (
            "a blind write of the same key is skipped under SKIP",
            &[Skip],
            a(keyed("m1", "sk-old")),
            vec![("a", blind(keyed("m1", "sk-old")))],
            vec![skipped(SKIP_OTHER)],
            vec![],
        ),
        (
            "an equal number keeps its stored text",
            &[Skip, Overwrite],
            a(extra("m1", "retries", "8.0")),
            vec![("a", extra("m1", "retries", "8"))],
            vec![Unchanged(3)],
            vec![],
        ),
    ];
    for (case, policies, stored, items, outcomes, writes) in cases {
        for policy in policies {
            let case = format!("{case} ({policy:?})");
            let stored = stored.iter().map(|p| (p.name.clone(), p.clone())).collect();
            let items = items.iter().map(|(n, l)| (name(n), l.clone())).collect();
            let ((got_outcomes, mut got_writes), span) =
                timed(|| super::plan_import(items, *policy, stored));
            for p in &mut got_writes {
                settle(&mut p.create_time, &span);
                settle(&mut p.update_time, &span);
            }
            assert_eq!(got_outcomes, outcomes, "{case}: outcomes");
            assert_eq!(got_writes, writes, "{case}: writes");
        }
    }
}

#[test]
fn check_unbound() {
    // (case, bound conversations, force, Some(ids listed, "..." after them) when refused)
    let cases = [
        ("bound by none", 0, false, None),
        ("bound by none, forced", 0, true, None),
        ("bound by one, forced", 1, true, None),
        ("bound by six, forced", 6, true, None),
        ("bound by one", 1, false, Some((1, false))),
        ("bound by five: all listed", 5, false, Some((5, false))),
        ("bound by six: five and more", 6, false, Some((5, true))),
    ];
    for (case, bound, force, refused) in cases {
        let users: Vec<ConversationId> = (1..=bound).map(id).collect();
        let want = match refused {
            None => Ok(()),
            Some((listed, more)) => {
                let mut list: Vec<String> = (1..=listed).map(|n| id(n).to_string()).collect();
                if more {
                    list.push("...".into());
                }
                Err(StoreError::FailedPrecondition(format!(
                    "profile \"gpt\" is bound by conversations {}: switch them to another LLM first, or delete with force",
                    list.join(", ")
                )))
            }
        };
        assert_result(
            case,
            super::check_unbound(&name("gpt"), &users, force),
            want,
            "\"gpt\"",
        );
    }
}

#[test]
fn renamed() {
    // (case, stored revision, new name, revision after)
    let cases = [
        ("at revision 1", 1, "claude", 2),
        ("at a later revision", 41, "claude-opus-4.1", 42),
        ("at revision 0", 0, "claude", 1),
        ("to its own name", 3, "gpt", 4),
    ];
    for (case, revision, new, after) in cases {
        let old = stored("gpt", keyed("gpt-4o", "sk"), revision);
        let (mut got, span) = timed(|| super::renamed(&old, &name(new)));
        settle(&mut got.update_time, &span);
        let want = Profile {
            name: name(new),
            revision: after,
            update_time: NOW,
            ..old
        };
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn rebound() {
    let now = Timestamp {
        seconds: 3_000,
        nanos: 1,
    };
    // (case, llms before, from, to, llms after)
    let cases = [
        (
            "the agent follows",
            vec![("agent", to("gpt"))],
            "gpt",
            "claude",
            vec![("agent", to("claude"))],
        ),
        (
            "every usage bound to it follows",
            vec![("agent", to("gpt")), ("condenser", to("gpt"))],
            "gpt",
            "claude",
            vec![("agent", to("claude")), ("condenser", to("claude"))],
        ),
        (
            "other profiles and inline configs stay",
            vec![
                ("agent", to("gpt")),
                ("condenser", to("o3")),
                ("title", inline("gpt")),
            ],
            "gpt",
            "claude",
            vec![
                ("agent", to("claude")),
                ("condenser", to("o3")),
                ("title", inline("gpt")),
            ],
        ),
        (
            "bound to none: only the revision moves",
            vec![("agent", to("o3"))],
            "gpt",
            "claude",
            vec![("agent", to("o3"))],
        ),
        (
            "to the same name",
            vec![("agent", to("gpt"))],
            "gpt",
            "gpt",
            vec![("agent", to("gpt"))],
        ),
    ];
    for (case, before, from, new, after) in cases {
        let c = Conversation {
            llms: llms(before),
            ..conversation(4)
        };
        let want = Conversation {
            llms: llms(after),
            revision: 5,
            update_time: now,
            ..c.clone()
        };
        assert_eq!(
            super::rebound(c, &name(from), &name(new), now),
            want,
            "{case}"
        );
    }
}

#[test]
fn check_next_seq() {
    let cid = id(2);
    // (case, next seq, expected next seq, refused)
    let cases = [
        ("no expectation", 5, None, false),
        ("no expectation, no events", 0, None, false),
        ("the next seq", 5, Some(5), false),
        ("0 with no events", 0, Some(0), false),
        ("a stale seq", 5, Some(4), true),
        ("a seq ahead", 5, Some(6), true),
        ("0 after events", 5, Some(0), true),
        ("a negative seq", 0, Some(-1), true),
    ];
    for (case, next, expected, refused) in cases {
        let want = match expected {
            Some(e) if refused => Err(StoreError::Aborted(format!(
                "conversation {cid} has next seq {next}, not the expected {e}; read the new events and retry"
            ))),
            _ => Ok(()),
        };
        assert_result(
            case,
            super::check_next_seq(&cid, next, expected),
            want,
            &cid.to_string(),
        );
    }
}

fn new_event(n: i64) -> NewEvent {
    NewEvent {
        id: format!("e{n}"),
        kind: if n % 2 == 0 {
            "MessageEvent"
        } else {
            "ActionEvent"
        }
        .into(),
        source: if n % 2 == 0 { "user" } else { "agent" }.into(),
        timestamp: Timestamp {
            seconds: 1_700_000_000 + n,
            nanos: 0,
        },
        body: format!(r#"{{"id": "e{n}"}}"#),
    }
}

#[test]
fn numbered() {
    // (case, first seq, events, their seqs)
    let cases: [(&str, i64, usize, &[i64]); 4] = [
        ("no events", 4, 0, &[]),
        ("from 0", 0, 3, &[0, 1, 2]),
        ("after stored events", 7, 2, &[7, 8]),
        ("one event", 41, 1, &[41]),
    ];
    for (case, first, count, seqs) in cases {
        let events: Vec<NewEvent> = (0..count as i64).map(new_event).collect();
        let want: Vec<Event> = events
            .iter()
            .zip(seqs)
            .map(|(e, seq)| Event {
                seq: *seq,
                id: e.id.clone(),
                kind: e.kind.clone(),
                source: e.source.clone(),
                timestamp: e.timestamp,
                body: e.body.clone(),
            })
            .collect();
        assert_eq!(want.len(), seqs.len(), "{case}: the table's seqs");
        assert_eq!(super::numbered(first, events), want, "{case}");
    }
}

#[test]
fn created() {
    // (case, the conversation as given)
    let cases = [
        ("with a revision and events", conversation(7)),
        ("at revision 0", conversation(0)),
        ("at a negative revision", conversation(-3)),
        (
            "without times or llms",
            Conversation {
                llms: BTreeMap::new(),
                create_time: Timestamp::default(),
                update_time: Timestamp::default(),
                event_count: 0,
                ..conversation(1)
            },
        ),
    ];
    for (case, c) in cases {
        let (mut got, span) = timed(|| super::created(c.clone()));
        assert_eq!(got.create_time, got.update_time, "{case}: one instant");
        settle(&mut got.create_time, &span);
        settle(&mut got.update_time, &span);
        let want = Conversation {
            revision: 1,
            create_time: NOW,
            update_time: NOW,
            event_count: 0,
            ..c
        };
        assert_eq!(got, want, "{case}");
    }
}

/// An edit of a conversation, as a table gives it.
type Edit = fn(&mut Conversation);

/// What a change may do to the metadata the rule owns: all of it ignored.
fn tamper(c: &mut Conversation) {
    (c.id, c.revision, c.event_count) = (id(9), 99, 0);
    (c.create_time, c.update_time) = (Timestamp::default(), Timestamp::default());
}

#[test]
fn updated() {
    // (case, the change's edit of the content, its edit of the metadata, whether it is a change)
    let cases: [(&str, Edit, Edit, bool); 10] = [
        ("nothing", |_| {}, |_| {}, false),
        ("metadata only", |_| {}, tamper, false),
        ("another id only", |_| {}, |c| c.id = id(9), false),
        ("a new title", |c| c.title = "new".into(), |_| {}, true),
        (
            "a new status",
            |c| c.execution_status = ExecutionStatus::Finished,
            |_| {},
            true,
        ),
        ("a tag less", |c| c.tags = BTreeMap::new(), |_| {}, true),
        (
            "other state",
            |c| c.state = state(r#"{"max_iterations": 51}"#),
            |_| {},
            true,
        ),
        (
            "another llm",
            |c| c.llms = llms(vec![("agent", inline("o3"))]),
            |_| {},
            true,
        ),
        (
            "a new title and metadata",
            |c| c.title = "new".into(),
            tamper,
            true,
        ),
        (
            "a status back to idle",
            |c| c.execution_status = ExecutionStatus::Idle,
            tamper,
            true,
        ),
    ];
    for (case, content, metadata, changes) in cases {
        let old = conversation(4);
        let change = |c: &Conversation| {
            let mut new = c.clone();
            content(&mut new);
            metadata(&mut new);
            Ok(new)
        };
        let (got, span) = timed(|| super::updated(&old, change));
        let got = got.map(|new| {
            new.map(|mut c| {
                settle(&mut c.update_time, &span);
                c
            })
        });
        // The stored conversation with the new content, one revision later.
        let mut want = Conversation {
            revision: 5,
            update_time: NOW,
            ..old.clone()
        };
        content(&mut want);
        assert_result(case, got, Ok(changes.then_some(want)), "");
    }
}

#[test]
fn updated_passes_a_refusal_on() {
    let cid = id(7).to_string();
    // (case, the change's refusal, what its message names)
    let cases = [
        (
            "refused in its state",
            StoreError::FailedPrecondition("conversation is running".into()),
            "running",
        ),
        ("gone", conversation_not_found(&id(7)), cid.as_str()),
        ("stale", mismatch("conversation", &cid, 2, 4), cid.as_str()),
    ];
    for (case, refusal, resource) in cases {
        let want = format!("{refusal:?}");
        let got = super::updated(&conversation(4), |_| Err(refusal));
        assert_eq!(format!("{got:?}"), format!("Err({want})"), "{case}");
        let message = got.expect_err(case).to_string();
        assert!(
            message.contains(resource),
            "{case}: {message} names no {resource}"
        );
    }
}

/// (case, policies, stored revision, the file's title, events, Ok((outcome, create_time)) or
/// Err(skipped))
type ConversationImportCase = (
    &'static str,
    &'static [ConflictPolicy],
    Option<i64>,
    &'static str,
    usize,
    Result<(ImportOutcome, Timestamp), ImportOutcome>,
);

#[test]
fn plan_import_conversation() {
    use ImportOutcome::{Created, Updated};
    let exists = || skipped("a conversation with that id exists");
    let (same, other) = (TITLE, "imported");
    let cases: Vec<ConversationImportCase> = vec![
        ("new, no events", ALL, None, other, 0, Ok((Created(1), NOW))),
        (
            "new, with events",
            ALL,
            None,
            other,
            3,
            Ok((Created(1), NOW)),
        ),
        ("existing", &[Skip, Fail], Some(4), other, 3, Err(exists())),
        (
            "existing, same",
            &[Skip, Fail],
            Some(4),
            same,
            3,
            Err(exists()),
        ),
        (
            "existing",
            &[Overwrite],
            Some(4),
            other,
            2,
            Ok((Updated(5), CREATED)),
        ),
        (
            "existing, same",
            &[Overwrite],
            Some(4),
            same,
            3,
            Ok((Updated(5), CREATED)),
        ),
        (
            "existing at 0",
            &[Overwrite],
            Some(0),
            other,
            0,
            Ok((Updated(1), CREATED)),
        ),
    ];
    for (case, policies, revision, title, events, want) in cases {
        // As the file gives it: its own revision, times and event count, all ignored.
        let incoming = Conversation {
            title: title.into(),
            create_time: Timestamp::default(),
            update_time: Timestamp::default(),
            event_count: 42,
            ..conversation(99)
        };
        for policy in policies {
            let case = format!("{case} ({policy:?})");
            let old = revision.map(conversation);
            let (got, span) = timed(|| {
                super::plan_import_conversation(incoming.clone(), old.as_ref(), events, *policy)
            });
            let got = got.map(|(mut c, outcome)| {
                settle(&mut c.create_time, &span);
                settle(&mut c.update_time, &span);
                (c, outcome)
            });
            let want = want.clone().map(|(outcome, create_time)| {
                let (Created(revision) | Updated(revision)) = outcome else {
                    unreachable!("{case}: the table plans only writes")
                };
                let c = Conversation {
                    revision,
                    create_time,
                    update_time: NOW,
                    event_count: events as i64,
                    ..incoming.clone()
                };
                (c, outcome)
            });
            assert_eq!(got, want, "{case}");
        }
    }
}

#[test]
fn damaged_profile_placeholder() {
    let longest = "x".repeat(64);
    for raw in ["gpt", "claude.sonnet-4_5", &longest] {
        let want = Profile {
            name: name(raw),
            llm: LlmConfig::default(),
            revision: 0,
            create_time: Timestamp::default(),
            update_time: Timestamp::default(),
        };
        assert_eq!(damaged_placeholder(&name(raw)), want, "{raw}");
    }
}

#[test]
fn damaged_conversation_placeholder() {
    for cid in [id(0), id(7), id(255)] {
        let want = Conversation {
            id: cid,
            llms: BTreeMap::new(),
            execution_status: ExecutionStatus::Idle,
            title: String::new(),
            tags: BTreeMap::new(),
            state: Map::new(),
            revision: 0,
            create_time: Timestamp::default(),
            update_time: Timestamp::default(),
            event_count: 0,
        };
        assert_eq!(damaged_conversation(&cid), want, "{cid}");
    }
}
