//! The everyday CLI against a real server (and offline on a data dir): list, get, put, delete,
//! rename, watch, conversations list|get|events, completions; address forms, exit codes, and
//! error messages in words.
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use profile_registry::pb;
use serde_json::Value;

use crate::helpers::{
    binary, bound, conversation, create, create_conversation, message_event, output_text, profile,
    run_cli, sled_only, terminate, TestApp,
};

/// An SDK profile file with a key, a float, an integer under extra and schema_version last.
const ALPHA: &str = r#"{
  "model": "anthropic/claude-sonnet-4-5-20250929",
  "api_key": "sk-cli-alpha-0001",
  "base_url": "https://llm.example.com/v1",
  "temperature": 0.2,
  "num_retries": 5,
  "schema_version": 1
}"#;

/// Runs the CLI with `args` against `server`.
async fn at(server: &str, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--server", server]);
    run_cli(&all, &[]).await
}

/// Runs the CLI with `stdin` as its standard input, off the async workers.
async fn run_cli_stdin(args: &[&str], stdin: &str) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = cli_command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// The binary with `args` and none of the caller's REGISTRY_ variables.
fn cli_command(args: &[String]) -> Command {
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_")) {
        cmd.env_remove(k);
    }
    cmd.args(args);
    cmd
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing everything the command printed otherwise.
#[track_caller]
fn assert_exit(o: &Output, code: i32, what: &str) {
    assert_eq!(o.status.code(), Some(code), "{what}: {}", output_text(o));
}

/// Each line of `text` as JSON.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_commands_against_a_server() {
    let app = TestApp::spawn().await;
    let files = tempfile::tempdir().unwrap();
    let alpha_file = files.path().join("alpha.json");
    std::fs::write(&alpha_file, ALPHA).unwrap();
    let alpha_path = alpha_file.to_str().unwrap();
    // The address forms grpcurl and grpcio take, and the URL forms.
    let host_port = app.addr.to_string();
    let localhost = format!("localhost:{}", app.addr.port());
    let url = app.url();

    // put from a file, then from standard input.
    let o = at(&host_port, &["put", "alpha", alpha_path]).await;
    assert_exit(&o, 0, "put from a file");
    assert_eq!(stdout(&o), "created profile \"alpha\" (revision 1)\n");
    let o = run_cli_stdin(
        &["put", "beta", "-", "--server", &localhost],
        r#"{"model": "openai/gpt-4o", "schema_version": 1}"#,
    )
    .await;
    assert_exit(&o, 0, "put from stdin");
    assert!(
        stdout(&o).contains("created profile \"beta\""),
        "{}",
        stdout(&o)
    );

    // list: a table with a header, and the proto JSON mapping one object per line.
    let o = at(&url, &["list"]).await;
    assert_exit(&o, 0, "list");
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for column in ["NAME", "MODEL", "BASE_URL", "REVISION", "UPDATED"] {
        assert!(lines[0].contains(column), "{text}");
    }
    assert!(lines[1].starts_with("alpha ") && lines[1].contains("https://llm.example.com/v1"));
    assert!(lines[2].starts_with("beta ") && lines[2].contains("openai/gpt-4o"));
    let model_column = lines[0].find("MODEL").unwrap();
    assert_eq!(lines[1].find("anthropic/"), Some(model_column), "{text}");
    let o = run_cli(&["list", "--server", &host_port, "-o", "json"], &[]).await;
    let listed = json_lines(&stdout(&o));
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["name"], "alpha");
    assert_eq!(listed[0]["revision"], "1");
    assert_eq!(listed[0]["llm"]["apiKey"], "**********");
    assert_eq!(listed[1]["llm"]["model"], "openai/gpt-4o");

    // get: fields masked, revealed on request, proto JSON.
    let o = at(&host_port, &["get", "alpha"]).await;
    assert_exit(&o, 0, "get");
    let text = stdout(&o);
    assert!(
        text.contains("api_key") && text.contains("**********"),
        "{text}"
    );
    assert!(!text.contains("sk-cli-alpha-0001"), "{text}");
    assert!(
        text.contains("temperature") && text.contains("0.2"),
        "{text}"
    );
    let o = at(&host_port, &["get", "alpha", "--reveal-secrets"]).await;
    assert!(stdout(&o).contains("sk-cli-alpha-0001"), "{}", stdout(&o));
    let o = at(&host_port, &["get", "alpha", "-o", "json"]).await;
    let got: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(got["llm"]["baseUrl"], "https://llm.example.com/v1");
    assert_eq!(got["llm"]["extra"]["num_retries"], 5.0);

    // -o sdk: the exact bytes `export` writes, masked or with the key.
    let out = files.path().join("exported");
    let o = at(&host_port, &["export", out.to_str().unwrap()]).await;
    assert_exit(&o, 0, "export");
    let o = at(&host_port, &["get", "alpha", "-o", "sdk"]).await;
    assert_exit(&o, 0, "get -o sdk");
    assert_eq!(o.stdout, std::fs::read(out.join("alpha.json")).unwrap());
    let o = at(
        &host_port,
        &["get", "alpha", "-o", "sdk", "--reveal-secrets"],
    )
    .await;
    assert_eq!(
        stdout(&o),
        ALPHA,
        "the SDK file with its key is the file put"
    );

    // put again: replaces, keeps the stored key when the document holds the mask, and a stale
    // --expected-revision is refused with the store unchanged.
    let masked = ALPHA
        .replace("sk-cli-alpha-0001", "**********")
        .replace("0.2", "0.7");
    let o = run_cli_stdin(
        &[
            "put",
            "alpha",
            "--expected-revision",
            "1",
            "--server",
            &host_port,
        ],
        &masked,
    )
    .await;
    assert_exit(&o, 0, "put with the mask");
    assert_eq!(stdout(&o), "updated profile \"alpha\" (revision 2)\n");
    let o = at(
        &host_port,
        &["get", "alpha", "--reveal-secrets", "-o", "json"],
    )
    .await;
    let got: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        got["llm"]["apiKey"], "sk-cli-alpha-0001",
        "the mask kept the key"
    );
    assert_eq!(got["llm"]["temperature"], 0.7);
    let o = run_cli_stdin(
        &[
            "put",
            "alpha",
            "--expected-revision",
            "1",
            "--server",
            &host_port,
        ],
        ALPHA,
    )
    .await;
    assert_exit(&o, 1, "a stale revision");
    assert!(stderr(&o).contains("aborted: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("revision 2"), "{}", stderr(&o));
    let o = run_cli_stdin(&["put", "alpha", "--server", &host_port], "{\"model\": 3}").await;
    assert_exit(&o, 1, "a bad document");
    assert!(stderr(&o).contains("model"), "{}", stderr(&o));
    let o = at(&host_port, &["get", "alpha", "-o", "json"]).await;
    let got: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(got["revision"], "2", "refused puts changed nothing");

    // rename, then delete (with a revision check), and what a missing profile says.
    let o = at(&host_port, &["rename", "beta", "gamma"]).await;
    assert_exit(&o, 0, "rename");
    assert_eq!(
        stdout(&o),
        "renamed profile \"beta\" to \"gamma\" (revision 2)\n"
    );
    let o = at(&host_port, &["delete", "gamma", "--expected-revision", "1"]).await;
    assert_exit(&o, 1, "delete at a stale revision");
    let o = at(&host_port, &["delete", "gamma", "--expected-revision", "2"]).await;
    assert_exit(&o, 0, "delete");
    assert!(stdout(&o).contains("deleted profile \"gamma\""));
    for args in [
        &["get", "gamma", "--server", &host_port][..],
        &["delete", "gamma", "--server", &host_port][..],
        &["rename", "gamma", "delta", "--server", &host_port][..],
    ] {
        let o = run_cli(args, &[]).await;
        assert_exit(&o, 1, "a missing profile");
        assert!(
            stderr(&o).contains("not found: profile \"gamma\""),
            "{args:?}: {}",
            stderr(&o)
        );
    }

    // A reader that stops early ends the command quietly, with no panic.
    let script = format!(
        "{} list -o json --server {host_port} | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}",
        binary().display()
    );
    let piped = tokio::task::spawn_blocking(move || {
        Command::new("bash").arg("-c").arg(script).output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        !stderr(&piped).contains("panicked"),
        "{}",
        output_text(&piped)
    );

    // Usage errors exit 2, before any call.
    for args in [
        &["get"][..],
        &["list", "-o", "sdk"][..],
        &["list", "--server", "grpc://127.0.0.1:1"][..],
        &["put", "x", "--expected-revision", "soon"][..],
        &["conversations", "list", "--status", "sleeping"][..],
    ] {
        let o = run_cli(args, &[]).await;
        assert_exit(&o, 2, &format!("{args:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_bound_by_a_conversation_is_refused_in_words() {
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    create(&mut profiles, profile("minimal", "gpt-4o", None)).await;
    let mut conversations = app.conversations().await;
    create_conversation(&mut conversations, conversation(bound("minimal"), "bound")).await;
    let o = at(&app.url(), &["delete", "minimal"]).await;
    assert_exit(&o, 1, "delete of a bound profile");
    let text = stderr(&o);
    assert!(
        text.contains("failed precondition: profile \"minimal\" is bound by conversations"),
        "{text}"
    );
    let o = at(&app.url(), &["delete", "minimal", "--force"]).await;
    assert_exit(&o, 0, "delete --force");
}

/// Reads lines from a child's stdout on a thread; `next` waits up to 20 s for one.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    fn of(child: &mut std::process::Child) -> Self {
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    fn next(&self) -> String {
        self.rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a line within 20 s")
    }
}

/// `watch <flags> --server <url>`, its output piped.
fn spawn_watch(flags: &[&str], url: &str) -> std::process::Child {
    let args: Vec<String> = std::iter::once("watch")
        .chain(flags.iter().copied())
        .chain(["--server", url])
        .map(str::to_owned)
        .collect();
    cli_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The first line `watch <flags> --server <url>` prints (table form); the command is then stopped.
async fn first_watch_line(flags: &[&str], url: &str) -> String {
    let mut child = spawn_watch(flags, url);
    let line = Lines::of(&mut child).next();
    tokio::task::spawn_blocking(move || terminate(&mut child))
        .await
        .unwrap();
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_line_per_change_until_interrupted() {
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    create(
        &mut profiles,
        profile("first", "gpt-4o", Some("sk-watch-1")),
    )
    .await;
    let mut child = spawn_watch(&["--send-initial", "-o", "json"], &app.addr.to_string());
    let lines = Lines::of(&mut child);
    let initial: Value = serde_json::from_str(&lines.next()).unwrap();
    assert_eq!(initial["name"], "first");
    assert_eq!(initial["initial"], true);
    assert_eq!(initial["profile"]["llm"]["apiKey"], "**********");

    create(&mut profiles, profile("second", "gpt-4o-mini", None)).await;
    profiles
        .delete_profile(pb::DeleteProfileRequest {
            name: "first".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let put: Value = serde_json::from_str(&lines.next()).unwrap();
    assert_eq!(
        (put["name"].as_str(), put["type"].as_str()),
        (Some("second"), Some("PUT"))
    );
    let deleted: Value = serde_json::from_str(&lines.next()).unwrap();
    assert_eq!(
        (deleted["name"].as_str(), deleted["type"].as_str()),
        (Some("first"), Some("DELETE"))
    );
    let code = tokio::task::spawn_blocking(move || terminate(&mut child))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "watch ends with 0 when interrupted");

    // The table form: one line per change, the kind first.
    let line = first_watch_line(&["--send-initial"], &app.url()).await;
    assert!(
        line.starts_with("PUT") && line.contains("second") && line.contains("gpt-4o-mini"),
        "{line}"
    );

    // Resumed after the seq of the PUT of "second": the DELETE of "first" only, with its seq.
    let after = put["seq"].as_str().unwrap().to_owned();
    let line = first_watch_line(&["--start-after-seq", &after], &app.url()).await;
    let seq = deleted["seq"].as_str().unwrap();
    assert!(
        line.starts_with("DELETE")
            && line.contains("first")
            && line.contains(&format!("seq {seq}")),
        "{line}"
    );
    // With --send-initial it is a usage error.
    let o = run_cli(
        &[
            "watch",
            "--send-initial",
            "--start-after-seq",
            &after,
            "--server",
            &app.url(),
        ],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_commands_list_get_and_follow_events() {
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    create(
        &mut profiles,
        profile("claude", "anthropic/claude", Some("sk-conv-1")),
    )
    .await;
    let mut conversations = app.conversations().await;
    let c = create_conversation(
        &mut conversations,
        conversation(bound("claude"), "CLI demo"),
    )
    .await;
    let other = create_conversation(
        &mut conversations,
        conversation(crate::helpers::inline("gpt-4o", None), "inline one"),
    )
    .await;
    conversations
        .append_events(pb::AppendEventsRequest {
            conversation_id: c.id.clone(),
            events: vec![
                message_event("e0", "user", "hello"),
                message_event("e1", "agent", "hi"),
            ],
            expected_next_seq: Some(0),
        })
        .await
        .unwrap();
    let server = app.addr.to_string();

    let o = at(&server, &["conversations", "list"]).await;
    assert_exit(&o, 0, "conversations list");
    let text = stdout(&o);
    assert!(text.lines().next().unwrap().starts_with("ID"), "{text}");
    assert!(text.contains(&c.id) && text.contains(&other.id), "{text}");
    assert!(
        text.contains("profile claude") && text.contains("inline gpt-4o"),
        "{text}"
    );
    let o = at(
        &server,
        &["conversations", "list", "--profile", "claude", "-o", "json"],
    )
    .await;
    let listed = json_lines(&stdout(&o));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], c.id.as_str());
    assert_eq!(listed[0]["eventCount"], "2");
    let o = at(&server, &["conversations", "list", "--status", "running"]).await;
    assert_exit(&o, 0, "list --status");
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "only the header: none is running"
    );

    let o = at(&server, &["conversations", "get", &c.id]).await;
    assert_exit(&o, 0, "conversations get");
    let text = stdout(&o);
    assert!(
        text.contains("CLI demo") && text.contains("profile claude"),
        "{text}"
    );
    assert!(
        text.contains("anthropic/claude"),
        "resolved from the profile: {text}"
    );
    assert!(!text.contains("sk-conv-1"), "{text}");
    let o = at(&server, &["conversations", "get", &c.id, "-o", "json"]).await;
    let got: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(got["llms"]["agent"]["profile"], "claude");
    assert_eq!(got["llms"]["agent"]["resolved"]["apiKey"], "**********");
    let missing = "00000000-0000-4000-8000-000000000000";
    let o = at(&server, &["conversations", "get", missing]).await;
    assert_exit(&o, 1, "a missing conversation");
    assert!(
        stderr(&o).contains("not found: conversation"),
        "{}",
        stderr(&o)
    );

    let o = at(&server, &["conversations", "events", &c.id]).await;
    assert_exit(&o, 0, "conversations events");
    let text = stdout(&o);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[1].trim_start().starts_with('0') && rows[1].contains("e0"),
        "{text}"
    );
    assert!(
        rows[2].contains("agent") && rows[2].contains("MessageEvent"),
        "{text}"
    );
    let o = at(&server, &["conversations", "events", &c.id, "-o", "json"]).await;
    let events = json_lines(&stdout(&o));
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["body"]["llm_message"]["content"][0]["text"], "hi");

    // --follow: the stored events, then a new one as it is appended.
    let args: Vec<String> = ["conversations", "events", &c.id, "--follow", "-o", "json"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["--server".to_owned(), server.clone()])
        .collect();
    let mut child = cli_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Lines::of(&mut child);
    let seqs: Vec<Value> = (0..2)
        .map(|_| serde_json::from_str::<Value>(&lines.next()).unwrap()["seq"].clone())
        .collect();
    assert_eq!(seqs, [Value::from("0"), Value::from("1")]);
    conversations
        .append_events(pb::AppendEventsRequest {
            conversation_id: c.id.clone(),
            events: vec![message_event("e2", "user", "again")],
            expected_next_seq: Some(2),
        })
        .await
        .unwrap();
    let live: Value = serde_json::from_str(&lines.next()).unwrap();
    assert_eq!(
        (live["seq"].as_str(), live["id"].as_str()),
        (Some("2"), Some("e2"))
    );
    let code = tokio::task::spawn_blocking(move || terminate(&mut child))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_everyday_commands_work_offline_on_a_data_dir() {
    if sled_only("offline commands open sled's data dir") {
        return;
    }
    let app = TestApp::spawn().await;
    let mut profiles = app.profiles().await;
    create(
        &mut profiles,
        profile("offline", "gpt-4o", Some("sk-offline-1")),
    )
    .await;
    // While the server holds the data dir, the offline form says to go through it.
    let data = app.dir.path().join("data");
    let data_dir = data.to_str().unwrap().to_owned();
    let o = run_cli(&["list", "--data-dir", &data_dir], &[]).await;
    assert_exit(&o, 1, "a held data dir");
    assert!(stderr(&o).contains("--server"), "{}", stderr(&o));
    let served = at(&app.url(), &["get", "offline", "-o", "sdk"]).await;
    let dir = app.stop().await;

    let o = run_cli(&["list", "--data-dir", &data_dir], &[]).await;
    assert_exit(&o, 0, "list offline");
    assert!(stdout(&o).contains("offline"), "{}", stdout(&o));
    assert!(stderr(&o).is_empty(), "no log lines: {}", stderr(&o));
    // A mistyped data dir is not made into a new, empty registry; following needs a server.
    let typo = dir.path().join("dta");
    let o = run_cli(&["list", "--data-dir", typo.to_str().unwrap()], &[]).await;
    assert_exit(&o, 1, "a data dir without a database");
    assert!(
        stderr(&o).contains("no registry database"),
        "{}",
        stderr(&o)
    );
    assert!(!typo.exists(), "the mistyped data dir was created");
    let o = run_cli(&["watch", "--data-dir", &data_dir], &[]).await;
    assert_exit(&o, 2, "watch offline");
    let o = run_cli(
        &["get", "offline", "-o", "sdk", "--data-dir", &data_dir],
        &[],
    )
    .await;
    assert_eq!(o.stdout, served.stdout, "the same file offline as served");
    let o = run_cli_stdin(
        &["put", "written-offline", "--data-dir", &data_dir],
        r#"{"model": "m", "api_key": "sk-offline-2"}"#,
    )
    .await;
    assert_exit(&o, 0, "put offline");
    let o = run_cli(
        &["rename", "offline", "renamed", "--data-dir", &data_dir],
        &[],
    )
    .await;
    assert_exit(&o, 0, "rename offline");

    let app = TestApp::spawn_in(dir).await;
    let o = at(&app.url(), &["get", "written-offline", "--reveal-secrets"]).await;
    assert!(stdout(&o).contains("sk-offline-2"), "{}", output_text(&o));
    let o = at(&app.url(), &["list", "-o", "json"]).await;
    let names: Vec<Value> = json_lines(&stdout(&o))
        .into_iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(
        names,
        [Value::from("renamed"), Value::from("written-offline")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_are_named_with_what_to_do() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = format!("127.0.0.1:{port}");
    let o = at(&server, &["list"]).await;
    assert_exit(&o, 1, "nobody listening");
    let text = stderr(&o);
    for part in [server.as_str(), "profile-registry serve", "--data-dir"] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }

    // https:// to a plaintext server.
    let app = TestApp::spawn().await;
    let o = run_cli(&["list", "--server", &format!("https://{}", app.addr)], &[]).await;
    assert_exit(&o, 1, "TLS to plaintext");
    let text = stderr(&o);
    assert!(text.contains("answers plaintext"), "{text}");
    assert!(text.contains(&format!("http://{}", app.addr)), "{text}");
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef profile-registry"),
        ("fish", "complete -c profile-registry"),
    ] {
        let o = Command::new(binary())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_exit(&o, 0, shell);
        let text = stdout(&o);
        assert!(text.contains(marker), "{shell}: {marker:?} missing");
        for command in ["conversations", "rename", "--reveal-secrets"] {
            assert!(text.contains(command), "{shell}: {command} missing");
        }
    }
    let o = Command::new(binary())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_exit(&o, 2, "an unknown shell");
}
