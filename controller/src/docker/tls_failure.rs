//! A TLS handshake with an engine that failed, told as the operator fixes it.
//!
//! bollard and hyper-util bury rustls's verdict a few sources deep (a connect error wrapping an
//! I/O error wrapping `rustls::Error`); it is dug out here and turned into the cause and the fix
//! a Swarm operator needs: which certificate, which CA, which name.

use std::error::Error as StdError;
use std::fmt;

use rustls::{AlertDescription, CertificateError};

use super::TlsFiles;

/// What went wrong in the handshake, each with its own fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The engine's certificate is not signed by the CA the operator was given.
    EngineCertificateUntrusted,
    /// The engine's certificate does not name the address the operator connects to.
    EngineCertificateNameMismatch,
    /// The engine's certificate has expired or is not valid yet.
    EngineCertificateExpired,
    /// The engine's certificate is not one for a TLS server.
    EngineCertificateNotForServer,
    /// The engine refused the operator's client certificate.
    ClientCertificateRefused,
    /// The endpoint does not speak TLS (a plain-HTTP port).
    EndpointNotTls,
    /// Any other handshake failure.
    Handshake,
}

impl TlsProblem {
    /// The `error` label of `swarm_upgrade_docker_api_errors_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            TlsProblem::EngineCertificateUntrusted => "tls_engine_cert_untrusted",
            TlsProblem::EngineCertificateNameMismatch => "tls_engine_cert_name_mismatch",
            TlsProblem::EngineCertificateExpired => "tls_engine_cert_expired",
            TlsProblem::EngineCertificateNotForServer => "tls_engine_cert_not_for_server",
            TlsProblem::ClientCertificateRefused => "tls_client_cert_refused",
            TlsProblem::EndpointNotTls => "tls_endpoint_not_tls",
            TlsProblem::Handshake => "tls_handshake",
        }
    }
}

/// A failed handshake with one endpoint: the problem, and the words of a fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    pub problem: TlsProblem,
    /// The endpoint's `host:port`.
    pub addr: String,
    /// The files in use (their paths go into the fix).
    pub files: TlsFiles,
    /// rustls's own words, for whoever digs further.
    pub detail: String,
}

impl TlsFailure {
    /// The TLS verdict in `err`'s source chain, if the failure was one.
    pub fn find(
        err: &(dyn StdError + 'static),
        addr: &str,
        files: &TlsFiles,
    ) -> Option<TlsFailure> {
        let verdict = rustls_error(err)?;
        Some(TlsFailure {
            problem: classify(verdict),
            addr: addr.to_string(),
            files: files.clone(),
            detail: verdict.to_string(),
        })
    }

    fn host(&self) -> &str {
        self.addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(host, _)| host)
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (addr, host) = (&self.addr, self.host());
        let ca = self.files.ca.display();
        let cert = self.files.cert.display();
        match self.problem {
            TlsProblem::EngineCertificateUntrusted => write!(
                f,
                "{addr}: the engine's certificate is not signed by the CA in {ca} (DOCKER_CERT_PATH/ca.pem). \
                 Fix: give the operator the CA that signed the engines' certificates (the file dockerd's \
                 --tlscacert names) as ca.pem"
            )?,
            TlsProblem::EngineCertificateNameMismatch => write!(
                f,
                "{addr}: the engine's certificate does not name {host}. Fix: list the managers in \
                 --docker-host by an address or name their certificates carry in subjectAltName \
                 (`openssl x509 -noout -ext subjectAltName -in <engine cert>`), or reissue the \
                 engine's certificate with {host} in subjectAltName"
            )?,
            TlsProblem::EngineCertificateExpired => write!(
                f,
                "{addr}: the engine's certificate has expired or is not valid yet. Fix: renew the \
                 engine's certificate (dockerd --tlscert) and restart it, or correct the clock of \
                 the host the operator runs on"
            )?,
            TlsProblem::EngineCertificateNotForServer => write!(
                f,
                "{addr}: the engine's certificate is not a TLS server certificate. Fix: reissue it \
                 with extendedKeyUsage serverAuth"
            )?,
            TlsProblem::ClientCertificateRefused => write!(
                f,
                "{addr}: the engine refused the operator's client certificate {cert}. Fix: issue \
                 the operator's certificate from the CA the engine trusts (dockerd --tlscacert), \
                 with extendedKeyUsage clientAuth, and deploy it as DOCKER_CERT_PATH/cert.pem and \
                 key.pem"
            )?,
            TlsProblem::EndpointNotTls => write!(
                f,
                "{addr}: the endpoint does not speak TLS. Fix: use the engine's TLS port \
                 (dockerd -H tcp://0.0.0.0:2376 --tlsverify), or drop DOCKER_TLS_VERIFY and \
                 DOCKER_CERT_PATH for a plain-TCP engine"
            )?,
            TlsProblem::Handshake => write!(
                f,
                "{addr}: the TLS handshake with the engine failed. Fix: check that the engine \
                 runs with --tlsverify and the certificates in DOCKER_CERT_PATH ({ca}, {cert}) \
                 belong to this swarm"
            )?,
        }
        write!(f, " (TLS: {})", self.detail)
    }
}

/// The first `rustls::Error` in the chain, also inside `io::Error`s (tokio-rustls and
/// hyper-rustls each wrap it in one, whose `source()` skips what it wraps).
fn rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = err.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && let Some(found) = rustls_error(inner)
    {
        return Some(found);
    }
    rustls_error(err.source()?)
}

fn classify(err: &rustls::Error) -> TlsProblem {
    use CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => TlsProblem::EngineCertificateUntrusted,
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                TlsProblem::EngineCertificateNameMismatch
            }
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => TlsProblem::EngineCertificateExpired,
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                TlsProblem::EngineCertificateNotForServer
            }
            _ => TlsProblem::Handshake,
        },
        // What a server answers a client certificate it will not take (Go's crypto/tls, which
        // dockerd uses, says bad_certificate; others unknown_ca or certificate_unknown).
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRequired
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied,
        ) => TlsProblem::ClientCertificateRefused,
        // Plain HTTP where a TLS record was expected.
        rustls::Error::InvalidMessage(_) => TlsProblem::EndpointNotTls,
        _ => TlsProblem::Handshake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> TlsFiles {
        TlsFiles {
            ca: "/certs/ca.pem".into(),
            cert: "/certs/cert.pem".into(),
            key: "/certs/key.pem".into(),
        }
    }

    #[test]
    fn digs_the_verdict_out_of_an_io_error() {
        let verdict = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, verdict);
        let failure = TlsFailure::find(&io, "10.0.0.11:2376", &files()).expect("found");
        assert_eq!(failure.problem, TlsProblem::EngineCertificateUntrusted);
        let text = failure.to_string();
        assert!(text.starts_with("10.0.0.11:2376: "), "{text}");
        assert!(
            text.contains("/certs/ca.pem") && text.contains("Fix:"),
            "{text}"
        );
        let unrelated = std::io::Error::other("connection refused");
        assert!(TlsFailure::find(&unrelated, "10.0.0.11:2376", &files()).is_none());
    }

    #[test]
    fn a_refusing_alert_is_the_client_certificate() {
        let verdict = rustls::Error::AlertReceived(AlertDescription::BadCertificate);
        assert_eq!(classify(&verdict), TlsProblem::ClientCertificateRefused);
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        let failure = TlsFailure::find(&name, "m1:2376", &files()).unwrap();
        assert!(
            failure.to_string().contains("does not name m1"),
            "{failure}"
        );
    }
}
