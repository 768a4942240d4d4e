//! `plan_import` under each conflict policy: new, stored, repeated, masked and blind items.
use super::*;

const SKIP_OTHER: &str = "a profile of that name exists with other content (on_conflict SKIP)";
const FAIL_EXISTS: &str =
    "a profile of that name exists and on_conflict is FAIL: nothing was written";

/// A profile an import writes (updated now, created at `create_time`).
fn wrote(n: &str, revision: i64, llm: LlmConfig, create_time: Timestamp) -> Profile {
    profile(n, llm, revision, create_time, NOW)
}

/// (case, policies, stored profiles, each item: (name, configuration, its outcome), writes)
type ImportCase = (
    &'static str,
    &'static [ConflictPolicy],
    Vec<Profile>,
    Vec<(&'static str, LlmConfig, Got)>,
    Vec<Profile>,
);

#[test]
fn plan_import() {
    use Got::{Created, Unchanged, Updated};
    let a = |l: LlmConfig| vec![stored("a", l, 3)];
    // Kept as a table: a row's first line, the case and what is stored; then the items, each
    // with its outcome; then the writes.
    #[rustfmt::skip]
    let cases: Vec<ImportCase> = vec![
        ("nothing to import", ALL, a(llm("m1")),
            vec![], vec![]),
        ("new names are created", ALL, a(llm("m1")),
            vec![("b", llm("m2"), Created(1)), ("c", llm("m3"), Created(1))],
            vec![wrote("b", 1, llm("m2"), NOW), wrote("c", 1, llm("m3"), NOW)]),
        ("same content is unchanged", &[Skip, Overwrite], a(llm("m1")),
            vec![("a", llm("m1"), Unchanged(3))], vec![]),
        ("same content fails the whole import under FAIL", &[Fail], a(llm("m1")),
            vec![("a", llm("m1"), skipped(FAIL_EXISTS)), ("b", llm("m2"), skipped(FAIL_OTHER))],
            vec![]),
        ("other content is skipped under SKIP, the rest written", &[Skip], a(llm("m1")),
            vec![("a", llm("m9"), skipped(SKIP_OTHER)), ("b", llm("m2"), Created(1))],
            vec![wrote("b", 1, llm("m2"), NOW)]),
        ("other content is replaced under OVERWRITE", &[Overwrite], a(llm("m1")),
            vec![("a", llm("m9"), Updated(4)), ("b", llm("m2"), Created(1))],
            vec![wrote("a", 4, llm("m9"), CREATED), wrote("b", 1, llm("m2"), NOW)]),
        ("other content fails the whole import under FAIL", &[Fail], a(llm("m1")),
            vec![("b", llm("m2"), skipped(FAIL_OTHER)), ("a", llm("m9"), skipped(FAIL_EXISTS))],
            vec![]),
        ("a new name twice with the same content", &[Skip, Overwrite], vec![],
            vec![("a", llm("m1"), Created(1)), ("a", llm("m1"), Unchanged(1))],
            vec![wrote("a", 1, llm("m1"), NOW)]),
        ("a new name twice under SKIP keeps the first", &[Skip], vec![],
            vec![("a", llm("m1"), Created(1)), ("a", llm("m2"), skipped(SKIP_OTHER))],
            vec![wrote("a", 1, llm("m1"), NOW)]),
        ("a new name twice under OVERWRITE writes both in order", &[Overwrite], vec![],
            vec![("a", llm("m1"), Created(1)), ("a", llm("m2"), Updated(2))],
            vec![wrote("a", 1, llm("m1"), NOW), wrote("a", 2, llm("m2"), NOW)]),
        ("a new name twice under FAIL: the first counts as existing", &[Fail], vec![],
            vec![
                ("a", llm("m1"), skipped(FAIL_OTHER)),
                ("b", llm("m2"), skipped(FAIL_OTHER)),
                ("a", llm("m1"), skipped(FAIL_EXISTS)),
            ],
            vec![]),
        ("a stored name twice under OVERWRITE", &[Overwrite], a(llm("m1")),
            vec![("a", llm("m1"), Unchanged(3)), ("a", llm("m2"), Updated(4))],
            vec![wrote("a", 4, llm("m2"), CREATED)]),
        ("the mask keeps the stored key", &[Skip, Overwrite], a(keyed("m1", "sk-old")),
            vec![("a", keyed("m1", SECRET_MASK), Unchanged(3))], vec![]),
        ("the mask with nothing stored creates no key", ALL, vec![],
            vec![("a", keyed("m1", SECRET_MASK), Created(1))],
            vec![wrote("a", 1, llm("m1"), NOW)]),
        ("a blank key clears the stored one", &[Overwrite], a(keyed("m1", "sk-old")),
            vec![("a", keyed("m1", " "), Updated(4))],
            vec![wrote("a", 4, llm("m1"), CREATED)]),
        ("a blind write of the same key is never unchanged", &[Overwrite], a(keyed("m1", "sk-old")),
            vec![("a", blind(keyed("m1", "sk-old")), Updated(4))],
            vec![wrote("a", 4, keyed("m1", "sk-old"), CREATED)]),
        ("a blind write of the same key is skipped under SKIP", &[Skip], a(keyed("m1", "sk-old")),
            vec![("a", blind(keyed("m1", "sk-old")), skipped(SKIP_OTHER))], vec![]),
        ("an equal number keeps its stored text", &[Skip, Overwrite], a(extra("m1", "retries", "8.0")),
            vec![("a", extra("m1", "retries", "8"), Unchanged(3))], vec![]),
    ];
    for (case, policies, stored, items, writes) in cases {
        let outcomes: Vec<Got> = items.iter().map(|(_, _, got)| got.clone()).collect();
        for policy in policies {
            let case = format!("{case} ({policy:?})");
            let stored = stored.iter().map(|p| (p.name.clone(), p.clone())).collect();
            let items = items.iter().map(|(n, l, _)| (name(n), l.clone())).collect();
            let ((got_outcomes, mut got_writes), span) =
                timed(|| super::plan_import(items, *policy, stored, BY));
            for p in &mut got_writes {
                settle(&mut p.create_time, &span);
                settle(&mut p.update_time, &span);
            }
            let got_outcomes: Vec<Got> = got_outcomes.into_iter().map(Got::from).collect();
            assert_eq!(got_outcomes, outcomes, "{case}: outcomes");
            assert_eq!(got_writes, writes, "{case}: writes");
        }
    }
}
