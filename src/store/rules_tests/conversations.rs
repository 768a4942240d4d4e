//! The conversation rules: event seqs and numbering, create and update, imports, damage.
use super::*;

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
        (
            "gone",
            StoreError::not_found("conversation", id(7)),
            cid.as_str(),
        ),
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
    Result<(Got, Timestamp), Got>,
);

#[test]
fn plan_import_conversation() {
    use Got::{Created, Updated};
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
            let got = got
                .map(|(mut c, outcome)| {
                    settle(&mut c.create_time, &span);
                    settle(&mut c.update_time, &span);
                    assert_eq!(outcome.name, c.id.to_string(), "{case}: named by its id");
                    (c, Got::from(outcome))
                })
                .map_err(Got::from);
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
            update_principal: String::new(),
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
