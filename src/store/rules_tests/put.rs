//! `plan_put`, the revision checks and not-found errors: modes, revisions, the secret merge rules.
use super::*;

#[test]
fn not_found_names_the_resource() {
    let cases = [
        (
            "profile",
            StoreError::not_found("profile", name("gpt-4o")),
            "profile",
            "gpt-4o",
        ),
        (
            "conversation",
            StoreError::not_found("conversation", id(1)),
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
    let old = old.map(std::sync::Arc::new);
    let (got, span) = timed(|| super::plan_put(old, name("gpt"), llm, mode, expected, BY));
    got.map(|plan| match plan {
        PutPlan::Unchanged(p) => (std::sync::Arc::unwrap_or_clone(p), PutOutcome::Unchanged),
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
    let missing = || StoreError::not_found("profile", name("gpt"));
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
