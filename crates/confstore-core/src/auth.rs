//! API bearer tokens and roles (docs/design.md §10).
//!
//! A token is `cst_<id>_<secret>`: `id` is 16 lowercase hex digits (public: it names the
//! token in the log, in audit events and in `token list`), `secret` is 43 base64url
//! characters (32 random bytes). The log records only SHA-256 of the whole text
//! ([`token_hash`]); a presented token is checked by hashing it and comparing the hashes in
//! constant time ([`TokenRecord::matches`]).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. Each route of the API needs one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read configuration: services, snapshots, values, history, diffs, search, head.
    ConfigRead,
    /// Change configuration (and everything `config.read` allows).
    ConfigWrite,
    /// Reveal secret values (each reveal is an audit event). Nothing else.
    SecretsReveal,
    /// Read the audit trail and export the whole log.
    AuditRead,
    /// Everything, including issuing and revoking tokens.
    Admin,
}

impl Role {
    /// Every role, in documentation order.
    pub const ALL: [Role; 5] = [Role::ConfigRead, Role::ConfigWrite, Role::SecretsReveal, Role::AuditRead, Role::Admin];

    /// The role's name as used on the command line, in the API and in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ConfigRead => "config.read",
            Role::ConfigWrite => "config.write",
            Role::SecretsReveal => "secrets.reveal",
            Role::AuditRead => "audit.read",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether a token holding `self` may use a route that needs `needed`: `admin` may do
    /// everything, `config.write` includes `config.read`, every other role only itself.
    pub fn grants(self, needed: Role) -> bool {
        self == needed || self == Role::Admin || (self == Role::ConfigWrite && needed == Role::ConfigRead)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prefix of every token (lets secret scanners recognise a leaked one).
pub const TOKEN_PREFIX: &str = "cst_";
/// Length of a token id in hex digits.
pub const TOKEN_ID_HEX_LEN: usize = 16;
/// Length of the secret part in base64url characters (32 bytes, unpadded).
pub const TOKEN_SECRET_LEN: usize = 43;
/// Length of a whole token.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + TOKEN_ID_HEX_LEN + 1 + TOKEN_SECRET_LEN;

/// A token as recorded in the state (from its `token_issued` event, and `token_revoked`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// Name for people.
    pub name: String,
    /// The role granted.
    pub role: Role,
    /// Only this service, if scoped.
    pub service: Option<String>,
    /// SHA-256 of the token text.
    pub hash: [u8; 32],
    /// Seq of the `token_issued` event.
    pub issued_seq: u64,
    /// Seq of the `token_revoked` event, once revoked.
    pub revoked_seq: Option<u64>,
}

impl TokenRecord {
    /// Whether `text` is this token: SHA-256 compared in constant time.
    pub fn matches(&self, text: &str) -> bool {
        bool::from(token_hash(text).ct_eq(&self.hash))
    }

    /// Whether the token may act on `service` (`None`: a request that names no service).
    pub fn covers(&self, service: Option<&str>) -> bool {
        match (&self.service, service) {
            (None, _) => true,
            (Some(scope), Some(s)) => scope == s,
            (Some(_), None) => false,
        }
    }
}

/// SHA-256 of a token's text: what the log stores.
pub fn token_hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// A newly made token: the text (shown once) and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The whole token text. Show it once; never store or log it.
    pub text: zeroize::Zeroizing<String>,
    /// Its public id.
    pub id: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Makes a token from 40 random bytes (8 for the id, 32 for the secret) that the caller
/// drew from the operating system.
pub fn new_token(random: &[u8; 40]) -> NewToken {
    use base64::Engine;
    let id = hex::encode(&random[..8]);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[8..]);
    NewToken { text: zeroize::Zeroizing::new(format!("{TOKEN_PREFIX}{id}_{secret}")), id }
}

impl NewToken {
    /// Draws a new token from the operating system's random source.
    pub fn draw() -> Result<NewToken, getrandom::Error> {
        let mut random = zeroize::Zeroizing::new([0u8; 40]);
        getrandom::fill(random.as_mut_slice())?;
        Ok(new_token(&random))
    }
}

/// Why a presented token is not even shaped like one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// Wrong length or prefix.
    #[error("not a confstore token (expected cst_<16 hex>_<43 base64url>)")]
    Shape,
}

/// The id inside a token's text, if the text has the shape of a token.
pub fn token_id(text: &str) -> Result<&str, TokenFormatError> {
    if text.len() != TOKEN_LEN || !text.starts_with(TOKEN_PREFIX) {
        return Err(TokenFormatError::Shape);
    }
    let rest = &text[TOKEN_PREFIX.len()..];
    let (id, tail) = rest.split_at(TOKEN_ID_HEX_LEN);
    let secret = tail.strip_prefix('_').ok_or(TokenFormatError::Shape)?;
    let id_ok = id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if id_ok && secret_ok { Ok(id) } else { Err(TokenFormatError::Shape) }
}

/// Whether `id` is a well-formed token id.
pub fn is_token_id(id: &str) -> bool {
    id.len() == TOKEN_ID_HEX_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_parses_and_matches_only_itself() {
        let t = new_token(&[7; 40]);
        assert_eq!(t.text.len(), TOKEN_LEN);
        assert_eq!(token_id(&t.text), Ok(t.id.as_str()));
        let rec = TokenRecord {
            name: "n".into(),
            role: Role::ConfigRead,
            service: None,
            hash: token_hash(&t.text),
            issued_seq: 2,
            revoked_seq: None,
        };
        assert!(rec.matches(&t.text));
        let mut other = t.text.to_string();
        other.pop();
        other.push('A');
        assert!(!rec.matches(&other));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "cst_",
            "Bearer x",
            &"cst_".repeat(16),
            "cst_0011223344556677_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert!(token_id(bad).is_err(), "{bad}");
        }
        let good = new_token(&[1; 40]);
        let upper = good.text.replacen("cst_0101", "cst_0A01", 1);
        assert!(token_id(&upper).is_err());
    }

    #[test]
    fn roles_grant_as_documented() {
        use Role::*;
        assert!(Admin.grants(SecretsReveal) && Admin.grants(AuditRead));
        assert!(ConfigWrite.grants(ConfigRead) && !ConfigRead.grants(ConfigWrite));
        assert!(!SecretsReveal.grants(ConfigRead) && !AuditRead.grants(ConfigRead));
        assert!(!ConfigWrite.grants(SecretsReveal) && !ConfigWrite.grants(Admin));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
