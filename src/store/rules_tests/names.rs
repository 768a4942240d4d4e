//! Deleting, renaming and rebinding profiles: `check_unbound`, `renamed`, `rebound`.
use super::*;

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
        let (mut got, span) = timed(|| super::renamed(&old, &name(new), BY));
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
    // (case, from, to, each usage: (name, its LLM before, after)), kept as a table
    #[rustfmt::skip]
    let cases = [
        ("the agent follows", "gpt", "claude", vec![("agent", to("gpt"), to("claude"))]),
        ("every usage bound to it follows", "gpt", "claude",
            vec![("agent", to("gpt"), to("claude")), ("condenser", to("gpt"), to("claude"))]),
        ("other profiles and inline configs stay", "gpt", "claude",
            vec![("agent", to("gpt"), to("claude")), ("condenser", to("o3"), to("o3")), ("title", inline("gpt"), inline("gpt"))]),
        ("bound to none: only the revision moves", "gpt", "claude", vec![("agent", to("o3"), to("o3"))]),
        ("to the same name", "gpt", "gpt", vec![("agent", to("gpt"), to("gpt"))]),
    ];
    for (case, from, new, usages) in cases {
        let (before, after) = usages
            .into_iter()
            .map(|(usage, before, after)| ((usage, before), (usage, after)))
            .unzip();
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
