//! Probe targets: `HOST:PORT` (TCP connect) or `http://HOST[:PORT]/path` (HTTP GET).

use std::fmt;
use std::str::FromStr;

/// What a probe does once connected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A TCP connect; success once the handshake completes.
    Tcp,
    /// An HTTP/1.1 GET of `path`; success when the status is the expected one.
    Http { path: String },
}

/// One probe target. `tasks.<service>` resolves to every task address of the
/// service in swarm DNS, and every address is probed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    raw: String,
    pub host: String,
    pub port: u16,
    pub kind: ProbeKind,
    /// For HTTP: the status expected (overrides the prober's default).
    pub expect_status: Option<u16>,
}

/// Why a target string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid probe target {input:?}: {reason}; write HOST:PORT (e.g. tasks.web:80) or http://HOST[:PORT]/path"
)]
pub struct TargetError {
    pub input: String,
    pub reason: &'static str,
}

impl Target {
    /// The target as written; used as the `target` metric label.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        Self {
            raw: join_host_port(&host, port),
            host,
            port,
            kind: ProbeKind::Tcp,
            expect_status: None,
        }
    }

    pub fn http(host: impl Into<String>, port: u16, path: impl Into<String>) -> Self {
        let host = host.into();
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Self {
            raw: format!("http://{}{}", join_host_port(&host, port), path),
            host,
            port,
            kind: ProbeKind::Http { path },
            expect_status: None,
        }
    }

    pub fn with_expect_status(mut self, status: u16) -> Self {
        self.expect_status = Some(status);
        self
    }

    pub fn parse(input: &str) -> Result<Self, TargetError> {
        let err = |reason| TargetError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if let Some(rest) = s.strip_prefix("http://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = split_host_port(authority, Some(80)).map_err(err)?;
            let mut t = Target::http(host, port, path);
            t.raw = s.to_string();
            return Ok(t);
        }
        if s.contains("://") {
            return Err(err("only http:// URLs are supported (https is not)"));
        }
        let (host, port) = split_host_port(s, None).map_err(err)?;
        let mut t = Target::tcp(host, port);
        t.raw = s.to_string();
        Ok(t)
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn split_host_port(s: &str, default_port: Option<u16>) -> Result<(String, u16), &'static str> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err("unexpected text after ']'"),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| "the port is not a number 1-65535")?,
        None => default_port.ok_or("the port is missing")?,
    };
    if port == 0 {
        return Err("the port is not a number 1-65535");
    }
    Ok((host.to_string(), port))
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let t = Target::parse("tasks.service:80").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, &t.kind),
            ("tasks.service", 80, &ProbeKind::Tcp)
        );
        assert_eq!(t.to_string(), "tasks.service:80");
        let t = Target::parse("http://tasks.web:8080/healthz").unwrap();
        assert_eq!(t.port, 8080);
        assert_eq!(
            t.kind,
            ProbeKind::Http {
                path: "/healthz".into()
            }
        );
        let t = Target::parse("http://web").unwrap();
        assert_eq!((t.port, t.kind), (80, ProbeKind::Http { path: "/".into() }));
        let t = Target::parse("[::1]:9").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        for bad in [
            "",
            "web",
            "web:",
            "web:0",
            "web:99999",
            ":80",
            "https://x/",
            "[::1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
