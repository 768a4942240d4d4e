//! Authentication and roles: bearer tokens from a file of hashed tokens, checked in constant time
//! by the call layer (`grpc::layer`) in front of every service; the caller's identity travels in request extensions
//! so handlers can check the `secrets` role for reveals and plaintext exports.
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Get, list and watch (secrets masked).
    Reader,
    /// Reader, plus every write (create, update, delete, rename, import, switch, append).
    Writer,
    /// Reveal secrets and export them in plaintext or encrypted.
    Secrets,
    /// Everything.
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "reader" => Some(Self::Reader),
            "writer" => Some(Self::Writer),
            "secrets" => Some(Self::Secrets),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Secrets => "secrets",
            Self::Admin => "admin",
        }
    }
}

/// Who is calling: the token's name and roles (the token itself is never kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name from the tokens file ("anonymous" when authentication is off).
    pub name: String,
    roles: BTreeSet<Role>,
}

impl Principal {
    /// The caller when authentication is off: every role.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            roles: [Role::Admin].into(),
        }
    }

    /// The command line on a data dir (no server, no token): every role.
    pub fn local() -> Self {
        Self {
            name: "local".into(),
            roles: [Role::Admin].into(),
        }
    }

    /// Whether the caller holds `role` (admin holds all; writer holds reader).
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&Role::Admin)
            || self.roles.contains(&role)
            || (role == Role::Reader && self.roles.contains(&Role::Writer))
    }

    /// PERMISSION_DENIED unless the caller holds `role`; `what` names the action.
    pub fn require(&self, role: Role, what: &str) -> Result<(), Status> {
        if self.has(role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "token {:?} lacks the {} role needed to {what}",
                self.name,
                role.name()
            )))
        }
    }
}

/// The caller of a request (anonymous admin when no layer put one there, i.e. auth is off).
pub fn principal<T>(req: &tonic::Request<T>) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}

struct Entry {
    name: String,
    roles: BTreeSet<Role>,
    hash: [u8; 32],
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entry({}, {:?})", self.name, self.roles)
    }
}

/// Parses a tokens file: one `name:role,role:sha256:<hex of the token's SHA-256>` per line; blank
/// lines and `#` comments are ignored. Errors name the line, never a hash.
fn parse_tokens(text: &str, path: &Path) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("{}: line {}: {why}", path.display(), i + 1);
        let mut parts = line.splitn(4, ':');
        let (Some(name), Some(roles), Some("sha256"), Some(hex)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected name:roles:sha256:<64 hex digits>"));
        };
        if name.is_empty() {
            return Err(bad("the name is empty"));
        }
        let roles = roles
            .split(',')
            .map(|r| {
                Role::parse(r).ok_or_else(|| {
                    bad(&format!(
                        "unknown role {r:?} (reader, writer, secrets, admin)"
                    ))
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let hash = decode_hex32(hex.trim()).ok_or_else(|| bad("the hash must be 64 hex digits"))?;
        out.push(Entry {
            name: name.to_owned(),
            roles,
            hash,
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no tokens", path.display()));
    }
    Ok(out)
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Checks one tokens-file line (as `new-token` prints it).
pub fn check_tokens_line(line: &str) -> anyhow::Result<()> {
    parse_tokens(line, Path::new("<line>"))
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!(e))
}

/// The SHA-256 of a token, as hex: what a tokens file holds.
pub fn token_hash_hex(token: &str) -> String {
    crate::sha256_hex(token.as_bytes())
}

/// The tokens, re-read when the file changes (a mounted Kubernetes Secret is updated in place).
pub struct Authenticator {
    path: PathBuf,
    state: Mutex<(Vec<Entry>, [u8; 32], Instant)>,
    protect_reflection: bool,
}

const RELOAD_CHECK: Duration = Duration::from_secs(2);

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Authenticator({}, {} tokens)",
            self.path.display(),
            self.len()
        )
    }
}

impl Authenticator {
    /// Loads the tokens file; an unreadable or malformed file is an error at start.
    pub fn load(path: &Path, protect_reflection: bool) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--auth-tokens-file {}: {e}", path.display()))?;
        let entries = parse_tokens(&text, path).map_err(|e| anyhow::anyhow!(e))?;
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new((entries, digest, Instant::now())),
            protect_reflection,
        })
    }

    /// How many tokens are loaded.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .len()
    }

    /// Whether reflection needs a token too (`--protect-reflection`).
    pub fn protect_reflection(&self) -> bool {
        self.protect_reflection
    }

    /// Whether no token is loaded (never true after a successful load).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn maybe_reload(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.2.elapsed() < RELOAD_CHECK {
            return;
        }
        st.2 = Instant::now();
        // By content, not modification time: a file replaced with the same mtime (a copy with
        // preserved times, a coarse clock) must not keep a removed token valid.
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(error = %e, file = %self.path.display(), "tokens file cannot be read; keeping the previous tokens");
                return;
            }
        };
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if digest == st.1 {
            return;
        }
        match parse_tokens(&text, &self.path) {
            Ok(entries) => {
                tracing::info!(file = %self.path.display(), tokens = entries.len(), "tokens file reloaded");
                *st = (entries, digest, Instant::now());
            }
            Err(e) => {
                tracing::error!(error = %e, "tokens file changed but cannot be read; keeping the previous tokens")
            }
        }
    }

    /// The caller presenting `authorization` (`Bearer <token>`), compared in constant time with
    /// every entry.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, Status> {
        let token = authorization
            .map(str::trim_start)
            .and_then(|h| {
                // The scheme is case-insensitive (RFC 9110): Bearer, bearer, BEARER.
                let (scheme, rest) = h.split_at_checked(6)?;
                (scheme.eq_ignore_ascii_case("bearer") && rest.starts_with([' ', '\t']))
                    .then_some(rest)
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "missing bearer token: send the metadata authorization: Bearer <token>",
                )
            })?;
        self.maybe_reload();
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found: Option<&Entry> = None;
        for e in &st.0 {
            if bool::from(e.hash.ct_eq(&presented)) {
                found = Some(e);
            }
        }
        found
            .map(|e| Principal {
                name: e.name.clone(),
                roles: e.roles.clone(),
            })
            .ok_or_else(|| Status::unauthenticated("invalid bearer token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(lines: &str) -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, lines).unwrap();
        Authenticator::load(&path, false).unwrap()
    }

    #[test]
    fn tokens_match_by_hash_and_carry_roles() {
        let a = auth(&format!(
            "# ops\nci:reader,writer:sha256:{}\n",
            token_hash_hex("tok-1")
        ));
        let p = a.authenticate(Some("Bearer tok-1")).unwrap();
        assert_eq!(p.name, "ci");
        assert!(p.has(Role::Reader) && p.has(Role::Writer) && !p.has(Role::Secrets));
        assert_eq!(
            a.authenticate(Some("Bearer tok-2")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            a.authenticate(None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let a = auth(&format!("ci:reader:sha256:{}\n", token_hash_hex("tok-1")));
        for header in [
            "Bearer tok-1",
            "bearer tok-1",
            "BEARER tok-1",
            "BeArEr  tok-1 ",
        ] {
            assert!(a.authenticate(Some(header)).is_ok(), "{header}");
        }
        for header in [
            "Bearertok-1",
            "Basic tok-1",
            "tok-1",
            "Bearer ",
            "Bear tok-1",
        ] {
            assert!(a.authenticate(Some(header)).is_err(), "{header}");
        }
    }

    #[test]
    fn a_tokens_file_is_reloaded_when_its_content_changes_whatever_its_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let both = format!(
            "a:reader:sha256:{}\nb:reader:sha256:{}\n",
            token_hash_hex("tok-a"),
            token_hash_hex("tok-b")
        );
        std::fs::write(&path, &both).unwrap();
        let a = Authenticator::load(&path, false).unwrap();
        assert!(a.authenticate(Some("Bearer tok-b")).is_ok());
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        // Remove b, of the same length (so size does not tell either), and put the mtime back.
        let only_a = both.replace(&token_hash_hex("tok-b"), &"0".repeat(64));
        std::fs::write(&path, &only_a).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        a.state.lock().unwrap().2 -= RELOAD_CHECK;
        assert_eq!(
            a.authenticate(Some("Bearer tok-b")).unwrap_err().code(),
            tonic::Code::Unauthenticated,
            "a removed token must stop working"
        );
        assert!(a.authenticate(Some("Bearer tok-a")).is_ok());
    }

    #[test]
    fn malformed_files_name_the_line_and_no_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "ok:reader:sha256:00\n").unwrap();
        let err = Authenticator::load(&path, false).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        std::fs::write(&path, format!("x:root:sha256:{}", token_hash_hex("t"))).unwrap();
        let err = Authenticator::load(&path, false).unwrap_err().to_string();
        assert!(
            err.contains("unknown role") && !err.contains(&token_hash_hex("t")),
            "{err}"
        );
    }
}
