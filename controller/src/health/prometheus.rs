//! The Prometheus gate: an instant query that must return no series (as kured checks alerts).
//!
//! A hand-written HTTP/1.1 GET over a tokio `TcpStream` (http only, no TLS), like the probes in
//! [`crate::probe::prober`]: `GET {url}/api/v1/query?query=<urlencoded>`, then the number of
//! entries of `data.result`.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::spec::PrometheusGate;

/// Responses larger than this are refused (a gate query returning this much is wrong anyway).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A parsed `http://HOST[:PORT][/prefix]` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing '/', empty for none (e.g. `/prometheus` behind a proxy).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses a base URL; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let s = url.trim();
        if s.is_empty() {
            return Err("it is empty".into());
        }
        let Some(rest) = s.strip_prefix("http://") else {
            return Err(if s.contains("://") {
                "only http:// is supported (https is not)".into()
            } else {
                "it does not start with http://".into()
            });
        };
        if rest.contains(['?', '#']) {
            return Err("a base URL has no query or fragment".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err("unexpected text after ']'".into()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err("the port is not a number 1-65535".into()),
            },
        };
        Ok(Self {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    fn host_header(&self) -> String {
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

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.prefix)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `query` against the Prometheus server at `url` and returns how many series it returned
/// (entries of `data.result` of a vector or matrix result). The whole exchange is bounded by
/// `timeout`. Every failure (bad URL, connection, HTTP status other than 2xx, a Prometheus
/// error, a scalar or string result, bad JSON) is an `Err` naming what happened.
pub async fn query_series_count(
    url: &str,
    query: &str,
    timeout: Duration,
) -> Result<usize, String> {
    let base = BaseUrl::parse(url).map_err(|e| format!("invalid Prometheus URL {url:?}: {e}"))?;
    let path = format!("{}/api/v1/query?query={}", base.prefix, urlencode(query));
    let (status, body) = match tokio::time::timeout(timeout, http_get(&base, &path)).await {
        Err(_) => return Err(format!("query to {base} timed out after {timeout:?}")),
        Ok(r) => r.map_err(|e| format!("query to {base} failed: {e}"))?,
    };
    let json: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    // Prometheus answers errors (400, 422, 503) with a JSON body naming them.
    let api_error = json.as_ref().ok().and_then(|v| {
        if v.get("status").and_then(|s| s.as_str()) == Some("error") {
            let kind = v
                .get("errorType")
                .and_then(|s| s.as_str())
                .unwrap_or("error");
            let msg = v.get("error").and_then(|s| s.as_str()).unwrap_or("");
            Some(format!("{kind}: {msg}"))
        } else {
            None
        }
    });
    if !(200..300).contains(&status) {
        let detail = api_error.unwrap_or_else(|| snippet(&body));
        return Err(format!(
            "Prometheus at {base} answered HTTP {status}: {detail}"
        ));
    }
    if let Some(e) = api_error {
        return Err(format!("Prometheus at {base} refused the query: {e}"));
    }
    let json = json.map_err(|e| format!("Prometheus at {base} sent invalid JSON: {e}"))?;
    let data = json
        .get("data")
        .ok_or_else(|| format!("Prometheus at {base} sent no `data`: {}", snippet(&body)))?;
    let result_type = data
        .get("resultType")
        .and_then(|t| t.as_str())
        .unwrap_or("vector");
    if !matches!(result_type, "vector" | "matrix") {
        return Err(format!(
            "the query returns a {result_type}, not series; write an instant vector query (e.g. ALERTS{{alertstate=\"firing\"}})"
        ));
    }
    data.get("result")
        .and_then(|r| r.as_array())
        .map(Vec::len)
        .ok_or_else(|| format!("Prometheus at {base} sent no `data.result` list"))
}

/// Runs a spec's Prometheus gate with its own timeout.
pub async fn evaluate_gate(gate: &PrometheusGate) -> Result<usize, String> {
    query_series_count(&gate.url, &gate.query, gate.timeout.get()).await
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut s = text[..end].to_string();
    if end < text.len() {
        s.push('…');
    }
    s
}

/// GET `path` on `base`; returns the status and the (de-chunked) body.
async fn http_get(base: &BaseUrl, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect((base.host.as_str(), base.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: swarm-upgrade\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        base.host_header()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the response: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_RESPONSE_BYTES {
            return Err(format!("response larger than {MAX_RESPONSE_BYTES} bytes"));
        }
    }
    parse_response(&raw)
}

/// Splits a complete HTTP/1.x response into status and body (handling `Content-Length` and
/// `Transfer-Encoding: chunked`).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("connection closed before the end of the response head")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") && code.len() == 3 => {
            code.parse::<u16>()
                .map_err(|_| format!("bad HTTP status line {status_line:?}"))?
        }
        _ => return Err(format!("bad HTTP status line {status_line:?}")),
    };
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(len) = length {
        if body.len() < len {
            return Err(format!(
                "response body cut short: {} of {len} bytes",
                body.len()
            ));
        }
        body[..len].to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunked body cut short")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunked body cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
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
        for bad in [
            "",
            "prometheus:9090",
            "https://prometheus:9090",
            "http://",
            "http://:9090",
            "http://p:0",
            "http://p:x",
            "http://p:9090/?x=1",
            "http://u:pw@p:9090",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_queries() {
        assert_eq!(
            urlencode(r#"ALERTS{alertstate="firing"} > 0"#),
            "ALERTS%7Balertstate%3D%22firing%22%7D%20%3E%200"
        );
        assert_eq!(urlencode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(urlencode("é"), "%C3%A9");
    }

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse_response(r).unwrap(), (200, b"{}".to_vec()));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).unwrap(), (200, b"abcde".to_vec()));
        let r = b"HTTP/1.0 500 Internal Server Error\r\n\r\noops";
        assert_eq!(parse_response(r).unwrap(), (500, b"oops".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
