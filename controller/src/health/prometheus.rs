//! The Prometheus gate: an instant query that must return no series (as kured checks alerts).
//!
//! `GET {url}/api/v1/query?query=<urlencoded>` through [`crate::http_client`], then the number
//! of entries of `data.result`.

use std::time::Duration;

use crate::http_client::{HttpClient, HttpError};
use crate::spec::{BaseUrl, BaseUrlError, PrometheusGate};

/// Why the gate's query could not be answered with a series count.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("invalid Prometheus URL {url:?}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: BaseUrlError,
    },
    #[error("query to {base} timed out after {after:?}")]
    TimedOut { base: BaseUrl, after: Duration },
    #[error("query to {base} failed: {source}")]
    Unreachable {
        base: BaseUrl,
        #[source]
        source: Box<HttpError>,
    },
    #[error("Prometheus at {base} answered HTTP {status}: {detail}")]
    Status {
        base: BaseUrl,
        status: u16,
        detail: String,
    },
    #[error("Prometheus at {base} refused the query: {detail}")]
    Refused { base: BaseUrl, detail: String },
    #[error("Prometheus at {base} sent invalid JSON: {source}")]
    InvalidJson {
        base: BaseUrl,
        #[source]
        source: serde_json::Error,
    },
    #[error("Prometheus at {base} sent no `data`: {snippet}")]
    NoData { base: BaseUrl, snippet: String },
    #[error(
        "the query returns a {result_type}, not series; write an instant vector query (e.g. ALERTS{{alertstate=\"firing\"}})"
    )]
    NotSeries { result_type: String },
    #[error("Prometheus at {base} sent no `data.result` list")]
    NoResult { base: BaseUrl },
}

impl PrometheusError {
    /// The `reason` label of a metric counting this failure.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PrometheusError::InvalidUrl { .. } => "invalid_url",
            PrometheusError::TimedOut { .. } => "timeout",
            PrometheusError::Unreachable { .. } => "unreachable",
            PrometheusError::Status { .. } => "http_status",
            PrometheusError::Refused { .. } => "refused",
            PrometheusError::InvalidJson { .. }
            | PrometheusError::NoData { .. }
            | PrometheusError::NoResult { .. } => "bad_response",
            PrometheusError::NotSeries { .. } => "not_series",
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn urlencode(s: &str) -> String {
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
) -> Result<usize, PrometheusError> {
    let base = BaseUrl::parse(url).map_err(|source| PrometheusError::InvalidUrl {
        url: url.to_string(),
        source,
    })?;
    let query_url = format!("{base}/api/v1/query?query={}", urlencode(query));
    let client = HttpClient::new("swarm-upgrade", timeout);
    let response = match client.get(&query_url, "application/json").await {
        Ok(r) => r,
        Err(HttpError::TimedOut { after, .. }) => {
            return Err(PrometheusError::TimedOut { base, after });
        }
        Err(e) => {
            return Err(PrometheusError::Unreachable {
                base,
                source: Box::new(e),
            });
        }
    };
    let json: Result<serde_json::Value, _> = serde_json::from_slice(&response.body);
    let api_error = json.as_ref().ok().and_then(api_error);
    if !response.is_success() {
        let detail = api_error.unwrap_or_else(|| snippet(&response.body));
        let status = response.status;
        return Err(PrometheusError::Status {
            base,
            status,
            detail,
        });
    }
    if let Some(detail) = api_error {
        return Err(PrometheusError::Refused { base, detail });
    }
    let json = json.map_err(|source| PrometheusError::InvalidJson {
        base: base.clone(),
        source,
    })?;
    series_count(&base, &json, &response.body)
}

/// Prometheus answers errors (400, 422, 503) with a JSON body naming them.
fn api_error(v: &serde_json::Value) -> Option<String> {
    if v.get("status").and_then(|s| s.as_str()) != Some("error") {
        return None;
    }
    let kind = v
        .get("errorType")
        .and_then(|s| s.as_str())
        .unwrap_or("error");
    let msg = v.get("error").and_then(|s| s.as_str()).unwrap_or("");
    Some(format!("{kind}: {msg}"))
}

fn series_count(
    base: &BaseUrl,
    json: &serde_json::Value,
    body: &[u8],
) -> Result<usize, PrometheusError> {
    let data = json.get("data").ok_or_else(|| PrometheusError::NoData {
        base: base.clone(),
        snippet: snippet(body),
    })?;
    let result_type = data
        .get("resultType")
        .and_then(|t| t.as_str())
        .unwrap_or("vector");
    if !matches!(result_type, "vector" | "matrix") {
        return Err(PrometheusError::NotSeries {
            result_type: result_type.to_string(),
        });
    }
    data.get("result")
        .and_then(|r| r.as_array())
        .map(Vec::len)
        .ok_or_else(|| PrometheusError::NoResult { base: base.clone() })
}

/// Runs a spec's Prometheus gate with its own timeout.
pub async fn evaluate_gate(gate: &PrometheusGate) -> Result<usize, PrometheusError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn snippets_are_bounded_and_name_an_empty_body() {
        assert_eq!(snippet(b"  "), "(empty body)");
        let long = "x".repeat(300);
        assert_eq!(snippet(long.as_bytes()).chars().count(), 201);
    }
}
