//! Signed, expiring links to one tenant's QR page and personal data.
//!
//! Owns the link secret (`state_dir/link-secret`, 32 random bytes as hex, created mode 0600 on
//! first use by whichever of the CLI and the daemon comes first), the HMAC-SHA256 signature over
//! (tenant, expiry), its constant-time verification, and the URL `flowhq link-url` prints. It
//! does not decide what a valid link unlocks; the routes do.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit as _, Mac as _};
use jiff::Timestamp;
use sha2::Sha256;

use crate::config::TenantId;

/// The secret's file name inside the state directory.
pub const SECRET_FILE: &str = "link-secret";

/// What the signature covers, versioned so that a future format cannot be confused with this one.
const DOMAIN: &str = "flowhq-link-v1";

/// The key links are signed with. Its `Debug` form never shows the key.
#[derive(Clone)]
pub struct LinkSecret(Vec<u8>);

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSecret(..)")
    }
}

impl LinkSecret {
    /// A secret from raw key bytes (tests, or a key kept elsewhere).
    pub fn from_bytes(key: &[u8]) -> Self {
        Self(key.to_vec())
    }
}

/// Failures to load or create the link secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The secret file exists but could not be read.
    #[error("cannot read link secret {path}")]
    ReadSecret {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secret file could not be created.
    #[error("cannot create link secret {path}")]
    CreateSecret {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secret file does not hold at least 16 bytes of hex.
    #[error("link secret {path} is not hex of at least 16 bytes")]
    InvalidSecret {
        /// The file.
        path: PathBuf,
    },
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The link's expiry has passed.
    #[error("link expired")]
    Expired,
    /// The signature does not match (tampered, another tenant's, or another host's secret).
    #[error("link signature is invalid")]
    BadSignature,
    /// `exp` or `sig` is missing or not well-formed.
    #[error("link is malformed")]
    Malformed,
}

/// Reads `state_dir/link-secret`, creating it (mode 0600, 32 random bytes as hex) when missing.
/// Creation is atomic: the key is written to a temporary file and hard-linked into place, so a
/// concurrent CLI and daemon agree on one key and nobody reads a half-written file.
pub fn load_or_create_secret(state_dir: &Path) -> Result<LinkSecret, Error> {
    let path = state_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => return parse_secret(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::ReadSecret { path, source }),
    }
    let create = |source| Error::CreateSecret {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(create)?;
    let key: [u8; 32] = rand::random();
    let tmp = state_dir.join(format!(".{SECRET_FILE}.{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(hex::encode(key).as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, &path)
    })();
    // The temporary name is ours alone; remove it whatever happened.
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(LinkSecret(key.to_vec())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadSecret {
                path: path.clone(),
                source,
            })?;
            parse_secret(&path, &text)
        }
        Err(source) => Err(create(source)),
    }
}

fn parse_secret(path: &Path, text: &str) -> Result<LinkSecret, Error> {
    match hex::decode(text.trim()) {
        Ok(key) if key.len() >= 16 => Ok(LinkSecret(key)),
        _ => Err(Error::InvalidSecret {
            path: path.to_owned(),
        }),
    }
}

fn mac(secret: &LinkSecret, tenant: &str, expires: i64) -> Hmac<Sha256> {
    // INVARIANT: HMAC accepts keys of any length.
    #[allow(clippy::expect_used)]
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&secret.0).expect("hmac takes a key of any length");
    mac.update(format!("{DOMAIN}\n{tenant}\n{expires}").as_bytes());
    mac
}

/// The signature (lowercase hex) of a link to `tenant` valid until `expires` (whole seconds).
pub fn sign(secret: &LinkSecret, tenant: &TenantId, expires: Timestamp) -> String {
    hex::encode(
        mac(secret, tenant.as_str(), expires.as_second())
            .finalize()
            .into_bytes(),
    )
}

/// Checks a link's `exp` (unix seconds) and `sig` (hex) for `tenant` at `now`. The signature is
/// compared in constant time; it is checked before the expiry so that a forged link learns
/// nothing about the clock.
pub fn verify(
    secret: &LinkSecret,
    tenant: &str,
    exp: &str,
    sig: &str,
    now: Timestamp,
) -> Result<(), LinkError> {
    let expires: i64 = exp.parse().map_err(|_| LinkError::Malformed)?;
    let sig = hex::decode(sig).map_err(|_| LinkError::Malformed)?;
    mac(secret, tenant, expires)
        .verify_slice(&sig)
        .map_err(|_| LinkError::BadSignature)?;
    if now.as_second() >= expires {
        return Err(LinkError::Expired);
    }
    Ok(())
}

/// The query string (`exp=...&sig=...`) of a link to `tenant` valid until `expires`.
pub fn query(secret: &LinkSecret, tenant: &TenantId, expires: Timestamp) -> String {
    format!(
        "exp={}&sig={}",
        expires.as_second(),
        sign(secret, tenant, expires)
    )
}

/// The full link to `tenant`'s QR page under `base` (`https://status.example.com`), valid until
/// `expires`.
pub fn qr_url(base: &str, secret: &LinkSecret, tenant: &TenantId, expires: Timestamp) -> String {
    format!(
        "{}/v1/tenants/{}/qr?{}",
        base.trim_end_matches('/'),
        tenant,
        query(secret, tenant, expires)
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn at(sec: i64) -> Timestamp {
        Timestamp::from_second(sec).unwrap()
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let key = LinkSecret::from_bytes(b"0123456789abcdef0123456789abcdef");
        let sig = sign(&key, &t("acme"), at(2_000));
        assert_eq!(verify(&key, "acme", "2000", &sig, at(1_999)), Ok(()));
        assert_eq!(
            verify(&key, "acme", "2000", &sig, at(2_000)),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn a_link_for_another_tenant_or_expiry_or_key_is_refused() {
        let key = LinkSecret::from_bytes(b"0123456789abcdef0123456789abcdef");
        let other = LinkSecret::from_bytes(b"fedcba9876543210fedcba9876543210");
        let sig = sign(&key, &t("acme"), at(2_000));
        let bad = Err(LinkError::BadSignature);
        assert_eq!(verify(&key, "other", "2000", &sig, at(1)), bad);
        assert_eq!(verify(&key, "acme", "2001", &sig, at(1)), bad);
        assert_eq!(verify(&other, "acme", "2000", &sig, at(1)), bad);
        assert_eq!(
            verify(&key, "acme", "soon", &sig, at(1)),
            Err(LinkError::Malformed)
        );
        assert_eq!(
            verify(&key, "acme", "2000", "zz", at(1)),
            Err(LinkError::Malformed)
        );
    }

    #[test]
    fn the_secret_is_created_once_with_mode_0600_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(a.0.len(), 32);
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1);
    }

    #[test]
    fn a_corrupt_secret_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRET_FILE), "not hex").unwrap();
        assert!(matches!(
            load_or_create_secret(dir.path()),
            Err(Error::InvalidSecret { .. })
        ));
    }

    #[test]
    fn the_url_names_the_tenant_qr_page_with_expiry_and_signature() {
        let key = LinkSecret::from_bytes(b"0123456789abcdef");
        let url = qr_url("https://s.example.com/", &key, &t("acme"), at(60));
        let sig = sign(&key, &t("acme"), at(60));
        assert_eq!(
            url,
            format!("https://s.example.com/v1/tenants/acme/qr?exp=60&sig={sig}")
        );
    }
}
