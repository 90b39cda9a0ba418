//! TLS to PostgreSQL: telling a connection the server's certificate or the URL's TLS settings
//! refused from an outage, in words an operator can act on.
//!
//! Owns finding the CA file a URL names (`sslrootcert`, else `PGSSLROOTCERT`) and checking it
//! can be read before connecting, and reading a failed connection for a TLS problem no retry
//! will mend: a server certificate that does not verify against `sslrootcert`, a host name the
//! certificate does not name (`sslmode=verify-full`), a certificate out of its validity period,
//! a server without TLS when `sslmode` demands it. It does not set TLS up: sqlx does, with
//! rustls, from the URL's libpq-style parameters (`sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`). Failures on connections a running pool opens later stay outages
//! (`Error::Unavailable`, retried); only connecting (`Store::connect`) reports these.

use std::path::{Path, PathBuf};

use rustls::CertificateError;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{Error, redact};

/// The text sqlx gives when the server answers a TLS request with "no".
const SERVER_WITHOUT_TLS: &str = "server does not support TLS";

/// What a TLS connection is checked against: the host name of the URL, and the CA file of
/// `sslrootcert` when the mode verifies the certificate (`verify-ca`, `verify-full`).
#[derive(Debug)]
pub(super) struct Target {
    host: String,
    root: Option<PathBuf>,
}

impl Target {
    /// The target of `options`, parsed from `url`.
    pub(super) fn of(url: &str, options: &PgConnectOptions) -> Self {
        let verifies = matches!(
            options.get_ssl_mode(),
            PgSslMode::VerifyCa | PgSslMode::VerifyFull
        );
        Self {
            host: options.get_host().to_owned(),
            root: if verifies { root_cert_file(url) } else { None },
        }
    }

    /// Checks that the CA file can be read, so a missing or unreadable file is said as such
    /// (sqlx reads it only after the server accepted TLS, and reports a bare I/O error).
    pub(super) fn check_root_cert(&self, url: &str) -> Result<(), Error> {
        let Some(path) = &self.root else {
            return Ok(());
        };
        std::fs::File::open(path)
            .map(drop)
            .map_err(|source| Error::Tls {
                url: redact(url),
                problem: format!(
                    "the CA file `{}` named by sslrootcert cannot be read",
                    path.display()
                ),
                source: source.into(),
            })
    }

    /// The TLS problem in a failed connection to `url`, as `Error::Tls`; any other failure
    /// is handed back unchanged.
    pub(super) fn refused(&self, url: &str, err: sqlx::Error) -> Result<Error, sqlx::Error> {
        match self.problem(&err) {
            Some(problem) => Ok(Error::Tls {
                url: redact(url),
                problem,
                source: err.into(),
            }),
            None => Err(err),
        }
    }

    /// What an operator must fix for `err`, or `None` when `err` is not a TLS problem (an
    /// outage, a refused login).
    fn problem(&self, err: &sqlx::Error) -> Option<String> {
        match err {
            sqlx::Error::Tls(cause) if cause.to_string() == SERVER_WITHOUT_TLS => Some(
                "the server does not offer TLS, and sslmode requires it \
                 (require, verify-ca or verify-full)"
                    .to_owned(),
            ),
            // Everything else sqlx reports as a TLS error is a setting of the URL: a CA or
            // client certificate file that is not PEM, a host that is no valid server name.
            sqlx::Error::Tls(_) => Some("TLS cannot be set up as the URL asks".to_owned()),
            // rustls hands a refused handshake up as an I/O error of kind `InvalidData`.
            sqlx::Error::Io(io) => match io.get_ref()?.downcast_ref::<rustls::Error>()? {
                rustls::Error::InvalidCertificate(cert) => Some(self.certificate_problem(cert)),
                _ => None,
            },
            _ => None,
        }
    }

    fn certificate_problem(&self, cert: &CertificateError) -> String {
        match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "host name mismatch: the server certificate is not valid for `{}` \
                     (sslmode=verify-full checks the URL's host against the certificate)",
                    self.host
                )
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                "the server certificate is expired or not valid yet".to_owned()
            }
            _ => match &self.root {
                Some(path) => format!(
                    "the server certificate did not verify against sslrootcert `{}`",
                    path.display()
                ),
                None => "the server certificate did not verify against the public CAs \
                         built in (no sslrootcert given)"
                    .to_owned(),
            },
        }
    }
}

/// The CA file named by `sslrootcert` (or `ssl-root-cert`, `ssl-ca`) in `url`, else by
/// `PGSSLROOTCERT`, as sqlx reads them; `None` when there is none or it is inline PEM.
fn root_cert_file(url: &str) -> Option<PathBuf> {
    let from_url = url::Url::parse(url).ok().and_then(|url| {
        url.query_pairs()
            .filter(|(key, _)| matches!(&**key, "sslrootcert" | "ssl-root-cert" | "ssl-ca"))
            .map(|(_, value)| value.into_owned())
            .last()
    });
    let value = from_url.or_else(|| std::env::var("PGSSLROOTCERT").ok())?;
    let inline = value.trim().starts_with("-----BEGIN");
    (!inline && !value.is_empty()).then(|| Path::new(&value).to_owned())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::str::FromStr;

    use super::*;

    fn target(url: &str) -> Target {
        Target::of(url, &PgConnectOptions::from_str(url).unwrap())
    }

    fn handshake_refused(cert: CertificateError) -> sqlx::Error {
        let err = rustls::Error::InvalidCertificate(cert);
        sqlx::Error::Io(io::Error::new(io::ErrorKind::InvalidData, err))
    }

    const VERIFY_FULL: &str =
        "postgres://flowhq:pw@db.example/flowhq?sslmode=verify-full&sslrootcert=/etc/flowhq/ca.crt";

    #[test]
    fn the_ca_file_is_read_from_the_url_only_when_the_mode_verifies() {
        let t = target(VERIFY_FULL);
        assert_eq!(t.root.as_deref(), Some(Path::new("/etc/flowhq/ca.crt")));
        assert_eq!(t.host, "db.example");
        let t = target("postgres://db.example/flowhq?sslmode=require&sslrootcert=/x/ca.crt");
        assert_eq!(
            t.root, None,
            "require does not verify, so sqlx ignores the CA"
        );
        assert_eq!(
            root_cert_file("postgres://h/db?ssl-ca=%2Fsrv%2Fca%20x.crt").as_deref(),
            Some(Path::new("/srv/ca x.crt"))
        );
    }

    #[test]
    fn certificate_failures_name_what_to_fix() {
        let t = target(VERIFY_FULL);
        let err = t
            .refused(
                VERIFY_FULL,
                handshake_refused(CertificateError::UnknownIssuer),
            )
            .unwrap();
        assert!(!err.is_unavailable());
        assert!(err.is_configuration());
        let text = crate::error::chain(&err).to_string();
        assert!(
            text.contains("did not verify against sslrootcert `/etc/flowhq/ca.crt`"),
            "{text}"
        );
        assert!(text.contains("flowhq:***@db.example"), "{text}");
        assert!(!text.contains("pw@"), "{text}");
        let err = t
            .refused(
                VERIFY_FULL,
                handshake_refused(CertificateError::NotValidForName),
            )
            .unwrap();
        assert!(
            err.to_string().contains(
                "host name mismatch: the server certificate is not valid for `db.example`"
            ),
            "{err}"
        );
        let err = t
            .refused(VERIFY_FULL, handshake_refused(CertificateError::Expired))
            .unwrap();
        assert!(err.to_string().contains("expired"), "{err}");
        let err = t
            .refused(VERIFY_FULL, sqlx::Error::Tls(SERVER_WITHOUT_TLS.into()))
            .unwrap();
        assert!(err.to_string().contains("does not offer TLS"), "{err}");
    }

    #[test]
    fn outages_are_not_tls_problems() {
        let t = target(VERIFY_FULL);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let back = t
            .refused(VERIFY_FULL, sqlx::Error::Io(refused))
            .unwrap_err();
        assert!(matches!(back, sqlx::Error::Io(_)));
        let reset = io::Error::new(io::ErrorKind::InvalidData, "not rustls");
        assert!(t.refused(VERIFY_FULL, sqlx::Error::Io(reset)).is_err());
        assert!(t.refused(VERIFY_FULL, sqlx::Error::PoolTimedOut).is_err());
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let url = "postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/flowhq-ca.crt";
        let err = target(url).check_root_cert(url).unwrap_err();
        let text = crate::error::chain(&err).to_string();
        assert!(
            text.contains(
                "the CA file `/nonexistent/flowhq-ca.crt` named by sslrootcert cannot be read"
            ),
            "{text}"
        );
        let url = "postgres://h/db?sslmode=require";
        target(url).check_root_cert(url).unwrap();
    }
}
