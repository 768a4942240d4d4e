//! What the everyday commands print: aligned columns for people, or the proto JSON mapping of the
//! messages (what grpcurl and every protobuf runtime read), one object per line.
use std::io::Write;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

use crate::config::Output;
use crate::pb;

/// Writes `text` to standard output. A reader that stopped early (`| head`) ends the command
/// quietly with exit 0, as it ends any Unix filter (SIGPIPE stays ignored: the gRPC connection's
/// own writes rely on it).
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("profile-registry: error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`emit`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use say;

/// How a list command prints its items: each one's proto JSON (`message` names its proto type),
/// or, for people, a table under `header` with a `row` per item.
pub struct Listing<T> {
    /// The items' full proto name, e.g. `profileregistry.v1.Profile`.
    pub message: &'static str,
    /// The table's column names.
    pub header: &'static [&'static str],
    /// An item's cells, in the header's order.
    pub row: fn(&T) -> Vec<String>,
}

/// Prints the profile a command answered with: its proto JSON, or for people the line `says`.
pub fn print_profile(output: Output, p: &pb::Profile, says: impl FnOnce() -> String) {
    match output {
        Output::Json => say!("{}", json(p, "profileregistry.v1.Profile")),
        Output::Table => say!("{}", says()),
    }
}

/// The descriptors of our protos (and the well-known types they use).
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set built into the binary decodes")
    })
}

/// The proto JSON mapping of `message`, whose full proto name is `full_name` (e.g.
/// `profileregistry.v1.Profile`), on one line.
pub fn json<M: prost::Message>(message: &M, full_name: &str) -> String {
    let Some(descriptor) = pool().get_message_by_name(full_name) else {
        return format!("{{\"error\": \"no descriptor for {full_name}\"}}");
    };
    let dynamic = match DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()) {
        Ok(d) => d,
        Err(e) => return format!("{{\"error\": \"cannot re-read {full_name}: {e}\"}}"),
    };
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    match dynamic.serialize_with_options(
        &mut serializer,
        &SerializeOptions::new().skip_default_fields(false),
    ) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(e) => format!("{{\"error\": \"cannot write {full_name} as JSON: {e}\"}}"),
    }
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        text.trim_end().to_owned()
    };
    let mut out = line(&mut header.iter().copied());
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// `field  value` lines, the fields aligned.
pub fn fields(pairs: &[(String, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k}{}  {v}\n", " ".repeat(width - k.chars().count())))
        .collect()
}

/// A timestamp as RFC 3339 in UTC to the second, or `-`.
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// An optional text, or `-`.
pub fn or_dash(v: Option<&str>) -> String {
    match v {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => "-".to_owned(),
    }
}

/// A `google.protobuf.Value` as compact JSON (for `extra` keys and event fields).
pub fn value_json(v: &prost_types::Value) -> String {
    json(v, "google.protobuf.Value")
}

/// The `profileregistry.v1.LlmConfig` fields that are set, as `(field, value)` pairs (secrets as
/// they came: masked unless revealed), then each `extra` key as `extra.KEY`.
pub fn llm_fields(prefix: &str, llm: &pb::LlmConfig) -> Vec<(String, String)> {
    let text = |v: &Option<String>| v.clone();
    let number = |v: Option<f64>| v.map(|v| v.to_string());
    let whole = |v: Option<i64>| v.map(|v| v.to_string());
    let fields = [
        ("model", Some(llm.model.clone())),
        ("base_url", text(&llm.base_url)),
        ("api_version", text(&llm.api_version)),
        ("api_key", text(&llm.api_key)),
        ("aws_access_key_id", text(&llm.aws_access_key_id)),
        ("aws_secret_access_key", text(&llm.aws_secret_access_key)),
        ("aws_session_token", text(&llm.aws_session_token)),
        ("aws_region_name", text(&llm.aws_region_name)),
        ("reasoning_effort", text(&llm.reasoning_effort)),
        ("usage_id", text(&llm.usage_id)),
        ("temperature", number(llm.temperature)),
        ("top_p", number(llm.top_p)),
        ("top_k", number(llm.top_k)),
        ("max_input_tokens", whole(llm.max_input_tokens)),
        ("max_output_tokens", whole(llm.max_output_tokens)),
    ];
    let mut out: Vec<(String, String)> = fields
        .into_iter()
        .filter_map(|(name, v)| Some((format!("{prefix}{name}"), v?)))
        .collect();
    if let Some(extra) = &llm.extra {
        let mut keys: Vec<_> = extra.fields.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in keys {
            out.push((format!("{prefix}extra.{k}"), value_json(v)));
        }
    }
    out
}

/// Prints one line per file that was not imported and a summary per outcome; returns whether all
/// files were imported.
pub fn print_import_summary(
    dir: &std::path::Path,
    reports: &[crate::domain::ImportOutcome],
    refused: &[crate::openhands::folder::Refused],
    dry_run: bool,
) -> bool {
    for r in refused {
        eprintln!("INVALID {}: {}", r.file, r.reason);
    }
    let mut counts = [0usize; 5];
    for r in reports {
        counts[r.outcome as usize] += 1;
        match r.outcome {
            crate::domain::Outcome::Invalid => eprintln!("INVALID {}: {}", r.name, r.reason),
            crate::domain::Outcome::Skipped => eprintln!("SKIPPED {}: {}", r.name, r.reason),
            _ if !r.reason.is_empty() => {
                eprintln!("{}: {}, {}", r.name, r.outcome.as_str(), r.reason);
            }
            _ => {}
        }
    }
    counts[crate::domain::Outcome::Invalid as usize] += refused.len();
    println!(
        "{}{}: {} files: created {}, updated {}, unchanged {}, skipped {}, invalid {}",
        if dry_run {
            "dry run, nothing written: "
        } else {
            ""
        },
        dir.display(),
        reports.len() + refused.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
    );
    let failed_conflict = reports
        .iter()
        .any(|r| r.outcome == crate::domain::Outcome::Skipped && r.reason.contains("FAIL"));
    counts[crate::domain::Outcome::Invalid as usize] == 0 && !failed_conflict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "MODEL"],
            &[
                vec!["a".into(), "gpt-4o".into()],
                vec!["longer-name".into(), "-".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME         MODEL\na            gpt-4o\nlonger-name  -\n"
        );
    }

    #[test]
    fn json_follows_the_proto_mapping() {
        let p = pb::Profile {
            name: "claude".into(),
            revision: 3,
            llm: Some(pb::LlmConfig {
                model: "m".into(),
                base_url: Some("https://x".into()),
                ..Default::default()
            }),
            update_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&json(&p, "profileregistry.v1.Profile")).unwrap();
        assert_eq!(v["name"], "claude");
        assert_eq!(v["revision"], "3", "int64 is a string in the mapping");
        assert_eq!(v["llm"]["baseUrl"], "https://x");
        assert_eq!(v["updateTime"], "2023-11-14T22:13:20Z");
    }
}
