//! Reading a Prometheus text exposition (the operator's and the clients' `/metrics`).

use std::collections::BTreeMap;

/// Samples of a Prometheus text exposition: `name{labels}` -> value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of the samples of one metric whose label set contains every `key="value"` in `with`.
pub fn metric_sum(samples: &BTreeMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            let base = k.split('{').next().unwrap_or("");
            base == name && with.iter().all(|w| k.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}
