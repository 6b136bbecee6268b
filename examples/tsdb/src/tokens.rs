//! InfluxDB 3's admin tokens: the operator token `_admin` (made once, by whoever asks
//! first, or from `--admin-token-file`; never expires, cannot be deleted, only
//! regenerated) and named admin tokens (made with an admin token, an expiry if asked,
//! deletable). A token is shown once, when it is made: the catalog keeps its SHA-256
//! only, so reading the data directory gives no one a token.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::catalog::{Catalog, CatalogError};

/// The operator token's name, as InfluxDB names it.
pub const OPERATOR: &str = "_admin";
/// Tokens the catalog holds (the operator's included).
pub const MAX_TOKENS: usize = 64;
/// The longest token name.
pub const MAX_TOKEN_NAME: usize = 64;
/// The longest expiry a named token may be given: ten years.
pub const MAX_EXPIRY_SECS: u64 = 10 * 366 * 24 * 3600;
/// Where InfluxDB 3's tokens start; tsdb's do too, so a token is recognisable in a
/// config or a leaked log.
const PREFIX: &str = "apiv3_";
/// A token given in an admin token file: long enough not to be guessed, short enough
/// for a header.
const MIN_GIVEN_TOKEN: usize = 16;
const MAX_GIVEN_TOKEN: usize = 512;
/// The largest admin token file read.
const MAX_TOKEN_FILE: u64 = 64 << 10;

/// One token as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub id: u64,
    /// The token's SHA-256, in hex.
    pub hash: String,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_ms: Option<i64>,
}

/// A token just made: the only moment its text is known.
#[derive(Debug, Clone)]
pub struct Created {
    pub name: String,
    pub token: String,
    pub entry: TokenEntry,
}

impl Created {
    /// The answer InfluxDB gives when it makes a token.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.entry.id,
            "name": self.name,
            "token": self.token,
            "hash": self.entry.hash,
            "created_at": rfc3339(self.entry.created_at_ms),
            "expiry": self.entry.expiry_ms.map(rfc3339),
        })
    }
}

/// Why a token request was refused; the HTTP layer picks the status by kind.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token, or one that is not tsdb's, or expired (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token that may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The name is taken (409).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// A bad name, expiry or file (400).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The system's randomness failed.
    #[error("cannot make a token: {0}")]
    Random(String),
}

/// The tokens, read from and written to the catalog, and whether they are checked.
pub struct Tokens {
    catalog: Arc<Catalog>,
    /// `false` with `--without-auth`: every request is let through.
    pub required: bool,
    /// Paths served without a token (`--disable-authz health,ping`).
    pub open: Vec<&'static str>,
}

impl Tokens {
    pub fn new(catalog: Arc<Catalog>, required: bool, open: Vec<&'static str>) -> Self {
        Self {
            catalog,
            required,
            open,
        }
    }

    /// The name of the token `presented` is, if it is a live one.
    pub fn check(&self, presented: Option<&str>) -> Result<String, TokenError> {
        let Some(presented) = presented else {
            return Err(TokenError::Unauthorized(
                "this request needs a token (send `Authorization: Bearer TOKEN`); the first \
                 one is made by POST /api/v3/configure/token/admin or read from \
                 --admin-token-file, and tsdb --without-auth checks none"
                    .into(),
            ));
        };
        let hash = hash(presented);
        let now = now_ms();
        self.catalog.read(|state| {
            let Some((name, entry)) = state.tokens.iter().find(|(_, e)| e.hash == hash) else {
                return Err(TokenError::Unauthorized(
                    "the token given is not one of tsdb's (or it was deleted or regenerated)"
                        .into(),
                ));
            };
            match entry.expiry_ms {
                Some(at) if at <= now => Err(TokenError::Unauthorized(format!(
                    "token {name:?} expired at {}",
                    rfc3339(at)
                ))),
                _ => Ok(name.clone()),
            }
        })
    }

    /// Makes the operator token while no token exists: the one request that needs
    /// none. Once any token exists (one from an admin token file, say, under another
    /// name), it is refused: it would hand whoever asks first a token no admin could
    /// revoke.
    pub fn create_operator(&self) -> Result<Created, TokenError> {
        let refusal = |tokens: &BTreeMap<String, TokenEntry>| {
            if tokens.contains_key(OPERATOR) {
                Err(TokenError::Conflict(format!(
                    "the operator token {OPERATOR:?} exists already; with it, POST \
                     /api/v3/configure/token/admin/regenerate makes a new one"
                )))
            } else if !tokens.is_empty() {
                Err(TokenError::Conflict(
                    "tokens exist already (the first came from an admin token file); an \
                     admin token makes others with POST /api/v3/configure/token/named_admin"
                        .into(),
                ))
            } else {
                Ok(())
            }
        };
        // Checked first without a write, so refused asks cost a read, not a token.
        self.catalog.read(|s| refusal(&s.tokens))?;
        self.make(OPERATOR, None, refusal)
    }

    /// A new operator token in place of the old, which stops working at once. Only
    /// the operator token itself may ask.
    pub fn regenerate_operator(&self, presented: Option<&str>) -> Result<Created, TokenError> {
        let caller = self.check(presented)?;
        if caller != OPERATOR {
            return Err(TokenError::Forbidden(format!(
                "only the operator token {OPERATOR:?} regenerates itself; this is {caller:?}"
            )));
        }
        let presented_hash = presented.map(self::hash).unwrap_or_default();
        let token = new_token()?;
        let hash = hash(&token);
        let mut made = None;
        self.catalog.update(|state| {
            let entry = state.tokens.get_mut(OPERATOR).ok_or_else(|| {
                TokenError::NotFound(format!("there is no operator token {OPERATOR:?}"))
            })?;
            // Checked again under the catalog's lock: of two regenerations with one
            // token, the second finds it replaced.
            if entry.hash != presented_hash {
                return Err(TokenError::Unauthorized(
                    "the operator token was regenerated meanwhile".into(),
                ));
            }
            entry.hash = hash;
            entry.created_at_ms = now_ms();
            made = Some(entry.clone());
            Ok::<_, TokenError>(())
        })?;
        let entry = made.ok_or_else(|| TokenError::NotFound(OPERATOR.into()))?;
        Ok(Created {
            name: OPERATOR.into(),
            token,
            entry,
        })
    }

    /// A named admin token, expiring `expiry_secs` from now if given.
    pub fn create_named(
        &self,
        name: &str,
        expiry_secs: Option<u64>,
    ) -> Result<Created, TokenError> {
        check_name(name).map_err(TokenError::Invalid)?;
        if name == OPERATOR {
            return Err(TokenError::Invalid(format!(
                "token_name: {OPERATOR:?} is the operator token's name"
            )));
        }
        let expiry_ms = match expiry_secs {
            None => None,
            Some(0) => {
                return Err(TokenError::Invalid(
                    "expiry_secs: 0 would make a token that has already expired".into(),
                ));
            }
            Some(s) if s > MAX_EXPIRY_SECS => {
                return Err(TokenError::Invalid(format!(
                    "expiry_secs: {s} is more than ten years ({MAX_EXPIRY_SECS})"
                )));
            }
            Some(s) => Some(now_ms() + i64::try_from(s * 1000).unwrap_or(i64::MAX / 2)),
        };
        self.make(name, expiry_ms, |tokens| {
            if tokens.contains_key(name) {
                Err(TokenError::Conflict(format!(
                    "token_name: a token named {name:?} exists already"
                )))
            } else {
                Ok(())
            }
        })
    }

    /// Deletes a named token; the operator token cannot be.
    pub fn delete(&self, name: &str) -> Result<(), TokenError> {
        if name == OPERATOR {
            return Err(TokenError::Forbidden(format!(
                "token_name: the operator token {OPERATOR:?} cannot be deleted; regenerate it instead"
            )));
        }
        self.catalog.update(|state| {
            state.tokens.remove(name).map(|_| ()).ok_or_else(|| {
                TokenError::NotFound(format!("token_name: no token is named {name:?}"))
            })
        })
    }

    /// At start, with `--admin-token-file`: when the catalog holds no token yet, the
    /// file's becomes one (the operator token unless the file names another), as
    /// InfluxDB 3 does for automated deployments. Tokens made since are kept; the
    /// file is then only reported.
    pub fn preconfigure(&self, file: &Path) -> Result<(), TokenError> {
        let given = read_token_file(file)?;
        let name = given.name.unwrap_or_else(|| OPERATOR.to_owned());
        if name != OPERATOR {
            check_name(&name)
                .map_err(|e| TokenError::Invalid(format!("{}: {e}", file.display())))?;
        } else if given.expiry_millis.is_some() {
            // An operator token that expired could be neither used nor regenerated, and
            // no other could be made: tsdb would be locked for good.
            return Err(TokenError::Invalid(format!(
                "{}: expiry_millis: the operator token {OPERATOR:?} never expires; name the token (\"name\") to give it an expiry",
                file.display()
            )));
        }
        let hash = hash(&given.token);
        let mut applied = false;
        self.catalog.update(|state| {
            if !state.tokens.is_empty() {
                return Ok::<_, TokenError>(());
            }
            state.tokens.insert(
                name.clone(),
                TokenEntry {
                    id: 0,
                    hash,
                    created_at_ms: now_ms(),
                    expiry_ms: given.expiry_millis,
                },
            );
            applied = true;
            Ok(())
        })?;
        if applied {
            tracing::info!("tokens: token {name:?} made from {}", file.display());
        } else {
            tracing::info!(
                "tokens: {} not used: the catalog holds tokens already (as InfluxDB, the file only seeds an empty one)",
                file.display()
            );
        }
        Ok(())
    }

    fn make(
        &self,
        name: &str,
        expiry_ms: Option<i64>,
        allowed: impl FnOnce(&BTreeMap<String, TokenEntry>) -> Result<(), TokenError>,
    ) -> Result<Created, TokenError> {
        let token = new_token()?;
        let hash = hash(&token);
        let mut made = None;
        self.catalog.update(|state| {
            allowed(&state.tokens)?;
            if state.tokens.len() >= MAX_TOKENS {
                return Err(TokenError::Conflict(format!(
                    "tsdb holds {MAX_TOKENS} tokens already; delete one first"
                )));
            }
            // Never an id a deleted token had.
            let id = state
                .tokens
                .values()
                .map(|e| e.id + 1)
                .max()
                .unwrap_or(0)
                .max(state.next_token_id);
            state.next_token_id = id + 1;
            let entry = TokenEntry {
                id,
                hash,
                created_at_ms: now_ms(),
                expiry_ms,
            };
            state.tokens.insert(name.to_owned(), entry.clone());
            made = Some(entry);
            Ok(())
        })?;
        let entry = made.ok_or_else(|| TokenError::NotFound(name.into()))?;
        Ok(Created {
            name: name.to_owned(),
            token,
            entry,
        })
    }
}

/// Why a catalog's tokens cannot be used, naming the entry.
pub fn check_entries(tokens: &BTreeMap<String, TokenEntry>) -> Result<(), String> {
    if tokens.len() > MAX_TOKENS {
        return Err(format!(
            "tokens: {} of them, more than {MAX_TOKENS}",
            tokens.len()
        ));
    }
    for (name, entry) in tokens {
        if name != OPERATOR {
            check_name(name).map_err(|e| format!("tokens: {e}"))?;
        }
        if entry.hash.len() != 64 || !entry.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("tokens.{name}.hash: not a SHA-256 in hex"));
        }
    }
    Ok(())
}

/// A token name: ASCII letters, digits, `_`, `-` and `.`, not starting with `_`
/// (InfluxDB's `_` names are its own).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOKEN_NAME {
        return Err(format!(
            "token_name: must be 1 to {MAX_TOKEN_NAME} characters long"
        ));
    }
    if name.starts_with('_')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "token_name: {:?} may hold only ASCII letters, digits, '_', '-' and '.', and not start with '_'",
            name.chars().take(MAX_TOKEN_NAME).collect::<String>()
        ));
    }
    Ok(())
}

/// The SHA-256 of a token, in hex: what the catalog keeps and what a request's token
/// is looked up by.
pub fn hash(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 256 bits from the system's randomness, after InfluxDB's prefix.
fn new_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// InfluxDB 3's offline admin token file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    token: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expiry_millis: Option<i64>,
}

/// Reads an admin token file: a regular file (not through a link), tsdb's own, that
/// no one else may write — whoever could would choose the admin token.
fn read_token_file(path: &Path) -> Result<TokenFile, TokenError> {
    let fail = |message: String| TokenError::Invalid(format!("{}: {message}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(format!("cannot open (links are not followed): {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(fail(
            "must be tsdb's user's own and writable by no one else: whoever can write it chooses the admin token".into(),
        ));
    }
    if meta.mode() & 0o044 != 0 {
        tracing::warn!(
            "tokens: {} may be read by other users (mode {:o}); they can read the admin token",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(fail(format!("larger than {MAX_TOKEN_FILE} bytes")));
    }
    let given: TokenFile = serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "not an admin token file {{\"token\", \"name\"?, \"expiry_millis\"?}}: {e}"
        ))
    })?;
    let length = given.token.len();
    if !(MIN_GIVEN_TOKEN..=MAX_GIVEN_TOKEN).contains(&length)
        || !given.token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(fail(format!(
            "token: must be {MIN_GIVEN_TOKEN} to {MAX_GIVEN_TOKEN} printable ASCII characters without spaces (it has {length} bytes)"
        )));
    }
    Ok(given)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_prefixed_random_and_hashed_as_sha256() {
        let (a, b) = (new_token().expect("a"), new_token().expect("b"));
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43, "{a}");
        assert_ne!(a, b);
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_plain_and_not_influxdbs_own() {
        assert!(check_name("ci-writer.2").is_ok());
        for bad in ["", "_admin", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
