//! `http://HOST[:PORT][/prefix]` base URLs (the Prometheus gate's `url`), validated with an error
//! that says what is wrong.

use std::fmt;

/// A parsed `http://HOST[:PORT][/prefix]` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing '/', empty for none (e.g. `/prometheus` behind a proxy).
    pub prefix: String,
}

/// Why a base URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    #[error("it is empty")]
    Empty,
    #[error("only http:// is supported (https is not)")]
    NotHttp,
    #[error("it does not start with http://")]
    NoScheme,
    #[error("a base URL has no query or fragment")]
    QueryOrFragment,
    #[error("credentials in the URL are not supported")]
    Credentials,
    #[error("unclosed '[' in IPv6 address")]
    UnclosedBracket,
    #[error("unexpected text after ']'")]
    TextAfterBracket,
    #[error("the host is missing")]
    NoHost,
    #[error("the port is not a number 1-65535")]
    BadPort,
}

impl BaseUrl {
    /// Parses a base URL; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, BaseUrlError> {
        let s = url.trim();
        if s.is_empty() {
            return Err(BaseUrlError::Empty);
        }
        let Some(rest) = s.strip_prefix("http://") else {
            return Err(if s.contains("://") {
                BaseUrlError::NotHttp
            } else {
                BaseUrlError::NoScheme
            });
        };
        if rest.contains(['?', '#']) {
            return Err(BaseUrlError::QueryOrFragment);
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(BaseUrlError::Credentials);
        }
        let (host, port) = split_authority(authority)?;
        if host.is_empty() {
            return Err(BaseUrlError::NoHost);
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(BaseUrlError::BadPort),
            },
        };
        Ok(Self {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// `host[:port]` as written in a `Host` header (IPv6 in brackets, port 80 left out).
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn split_authority(authority: &str) -> Result<(&str, Option<&str>), BaseUrlError> {
    if let Some(r) = authority.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or(BaseUrlError::UnclosedBracket)?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((h, Some(p))),
            None if after.is_empty() => Ok((h, None)),
            None => Err(BaseUrlError::TextAfterBracket),
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    })
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let u = BaseUrl::parse("http://prometheus:9090").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("prometheus", 9090, "")
        );
        let u = BaseUrl::parse("http://mon/prometheus/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("mon", 80, "/prometheus")
        );
        assert_eq!(u.to_string(), "http://mon/prometheus");
        let u = BaseUrl::parse("http://[::1]:9090").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9090));
        assert_eq!(u.to_string(), "http://[::1]:9090");
        for (bad, why) in [
            ("", BaseUrlError::Empty),
            ("prometheus:9090", BaseUrlError::NoScheme),
            ("https://prometheus:9090", BaseUrlError::NotHttp),
            ("http://", BaseUrlError::NoHost),
            ("http://:9090", BaseUrlError::NoHost),
            ("http://p:0", BaseUrlError::BadPort),
            ("http://p:x", BaseUrlError::BadPort),
            ("http://p:9090/?x=1", BaseUrlError::QueryOrFragment),
            ("http://u:pw@p:9090", BaseUrlError::Credentials),
            ("http://[::1", BaseUrlError::UnclosedBracket),
        ] {
            assert_eq!(BaseUrl::parse(bad), Err(why), "{bad}");
        }
    }
}
