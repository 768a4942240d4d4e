//! `--help` is the manual: every command and subcommand describes each flag and its env variable.
use std::process::Command;

use crate::helpers::binary;

const COMMANDS: [&str; 11] = [
    "",
    "serve",
    "import",
    "export",
    "import-conversations",
    "export-conversations",
    "new-token",
    "rotate-keys",
    "backup",
    "restore",
    "check",
];

/// The everyday commands: their connection flags have env variables; their per-call flags
/// (`--force`, `-o`, `--reveal-secrets`, ...) deliberately have none, so that a variable left in a
/// shell never forces a delete or reveals a key.
const EVERYDAY: [&str; 10] = [
    "list",
    "get",
    "put",
    "delete",
    "rename",
    "watch",
    "conversations list",
    "conversations get",
    "conversations events",
    "completions",
];

#[test]
fn every_flag_has_a_description_and_an_env_variable() {
    check_help(&COMMANDS, true);
}

#[test]
fn every_everyday_flag_has_a_description() {
    check_help(&EVERYDAY, false);
}

fn check_help(commands: &[&str], env_required: bool) {
    for command in commands {
        let mut cmd = Command::new(binary());
        cmd.args(command.split_whitespace());
        let out = cmd.arg("--help").output().unwrap();
        assert!(out.status.success(), "{command} --help");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut flags = 0;
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if !is_flag(line) {
                continue;
            }
            if trimmed.starts_with("-h, --help") || trimmed.starts_with("-V, --version") {
                continue;
            }
            flags += 1;
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| !is_flag(l))
                .copied()
                .collect();
            let described = block.iter().any(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('[')
            });
            assert!(described, "{command} {trimmed}: no description");
            assert!(
                !env_required || block.iter().any(|l| l.contains("[env: ")),
                "{command} {trimmed}: no env variable"
            );
        }
        assert!(
            flags >= 2 || (*command == "completions" && flags == 0),
            "{command}: no flags found in\n{text}"
        );
    }
}

/// A flag's first line: `  -x, --name` or `      --name`, not a `- value:` line.
fn is_flag(line: &str) -> bool {
    let trimmed = line.trim_start();
    let indent = line.len() - trimmed.len();
    (indent == 2 || indent == 6)
        && (trimmed.starts_with("--")
            || (trimmed.starts_with('-')
                && trimmed.chars().nth(1).is_some_and(char::is_alphabetic)))
}
