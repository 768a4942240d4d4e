//! The words of import and export, one type each, shared by the use cases, the wire and the CLI
//! (their protobuf forms convert beside the pb types, in `crate::pb`): what to do on a conflict,
//! how exported secrets travel, and what happened to each imported item.

/// What an import does with a name that exists, and an export with a file that differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ConflictPolicy {
    /// Keep what is there (import: the stored profile; export: the folder's file).
    #[default]
    Skip,
    /// Replace it (import: with the file's profile; export: with the registry's profile).
    Overwrite,
    /// Write nothing at all when any name conflicts.
    Fail,
}

/// How exported files carry secrets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretsMode {
    /// The SDK's mask "**********" (the SDK's default).
    #[default]
    Redacted,
    /// The secret values (the SDK's include_secrets=True).
    Plaintext,
    /// Fernet tokens with the key from --fernet-key-env (the SDK with OH_SECRET_KEY).
    Encrypted,
}

impl SecretsMode {
    /// The mode in words, as summaries print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redacted => "redacted",
            Self::Plaintext => "plaintext",
            Self::Encrypted => "encrypted",
        }
    }
}

/// What happened to one imported item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A new record.
    Created,
    /// An existing record was replaced.
    Updated,
    /// Already stored with this content.
    Unchanged,
    /// Not written (conflict).
    Skipped,
    /// Refused.
    Invalid,
}

impl Outcome {
    /// The outcome in words, as the CLI and the logs print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
            Self::Invalid => "invalid",
        }
    }
}

/// Who writes, as each revision keeps it: a name, and whether they may read secrets (a writer who
/// may not is blind: no outcome may tell whether a supplied secret equals the stored one).
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    /// The token's name, `anonymous` without authentication, `local` on a data dir.
    pub name: &'a str,
    /// The writer may not read secrets.
    pub blind: bool,
}

impl Writer<'static> {
    /// The command line on a data dir, or the server's own import on start: no token.
    pub const LOCAL: Self = Self {
        name: "local",
        blind: false,
    };
}

/// The reason given with a record created from a file whose secret held the SDK's mask.
pub const NO_KEY: &str = "no key: the file holds the mask";

/// What an import did with one item (a profile document, a conversation folder): the one form
/// the store, the use cases, the wire and the CLI all report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOutcome {
    /// The item: a profile's name (a document's name as given, in a report on documents) or a
    /// conversation's id.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why, for Skipped and Invalid; a note for a Created profile whose secret held the mask.
    pub reason: String,
    /// The stored revision afterwards (0 when nothing was written).
    pub revision: i64,
}

impl ImportOutcome {
    /// Written (Created, Updated) or found equal (Unchanged), at `revision`.
    pub fn stored(name: impl Into<String>, outcome: Outcome, revision: i64) -> Self {
        Self {
            name: name.into(),
            outcome,
            reason: String::new(),
            revision,
        }
    }

    /// Not written (Skipped, Invalid), and why.
    pub fn refused(name: impl Into<String>, outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome,
            reason: reason.into(),
            revision: 0,
        }
    }
}
