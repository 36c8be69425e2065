//! A verbose network inspect's task endpoints counted by host address as the answer streams in.
//!
//! At 30,000 tasks the answer is 6.3 MB per manager (31 MB at 150,000), and the operator needs
//! only how many endpoints each host still announces: `Services.<name>.Tasks[].Info["Host IP"]`.
//! A JSON parser wants the whole answer (or a blocking reader) before it gives anything back, so
//! the answer is read chunk by chunk through a small tokenizer that tracks strings, nesting and
//! keys, and keeps nothing but the counts: what the operator holds no longer grows with the fleet.

use std::collections::BTreeMap;

/// Longer strings are never a key the counter looks for nor a host address.
const KEPT: usize = 64;

/// Fed an answer's chunks in order ([`Self::feed`]), then [`Self::finish`]ed.
#[derive(Debug, Default)]
pub struct HostCounts {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The string being read (its first [`KEPT`] bytes), and whether it was longer.
    text: Vec<u8>,
    long: bool,
    /// A string just ended: the next byte says whether it was a key (`:`) or a value.
    ended: Option<Vec<u8>>,
    /// What the key just read names.
    awaiting: Awaiting,
    /// The nesting depth of the members of the top-level `Services` object, while inside it.
    services: Option<usize>,
    seen_object: bool,
    counts: BTreeMap<String, usize>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    #[default]
    Nothing,
    Services,
    HostIp,
}

/// The answer ended inside a string or an object, or held no object at all.
#[derive(Debug, thiserror::Error)]
#[error("a verbose network inspect that is not a whole JSON object")]
pub struct NotAnObject;

impl HostCounts {
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            self.byte(b);
        }
    }

    /// Per host address, how many task endpoints the answer lists on it.
    pub fn finish(mut self) -> Result<BTreeMap<String, usize>, NotAnObject> {
        if let Some(text) = self.ended.take() {
            self.value(text);
        }
        if self.in_string || self.depth != 0 || !self.seen_object {
            return Err(NotAnObject);
        }
        Ok(self.counts)
    }

    fn byte(&mut self, b: u8) {
        if self.in_string {
            return self.string_byte(b);
        }
        if b.is_ascii_whitespace() {
            return;
        }
        if let Some(text) = self.ended.take() {
            if b == b':' {
                self.awaiting = self.key(&text);
                return;
            }
            self.value(text);
        }
        match b {
            b'"' => {
                self.in_string = true;
                self.text.clear();
                self.long = false;
            }
            b'{' | b'[' => {
                if self.awaiting == Awaiting::Services && b == b'{' {
                    self.services = Some(self.depth + 1);
                }
                self.depth += 1;
                self.seen_object |= b == b'{';
                self.awaiting = Awaiting::Nothing;
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.services.is_some_and(|d| self.depth < d) {
                    self.services = None;
                }
            }
            // A number, `true`, `false`, `null` or a separator: no host address.
            _ => self.awaiting = Awaiting::Nothing,
        }
    }

    fn string_byte(&mut self, b: u8) {
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_string = false;
            self.ended = Some(if self.long {
                vec![]
            } else {
                std::mem::take(&mut self.text)
            });
            return;
        }
        if self.text.len() < KEPT {
            self.text.push(b);
        } else {
            self.long = true;
        }
    }

    fn key(&self, text: &[u8]) -> Awaiting {
        match text {
            b"Services" if self.depth == 1 => Awaiting::Services,
            b"Host IP" if self.services.is_some() => Awaiting::HostIp,
            _ => Awaiting::Nothing,
        }
    }

    fn value(&mut self, text: Vec<u8>) {
        if std::mem::take(&mut self.awaiting) == Awaiting::HostIp && !text.is_empty() {
            let host = String::from_utf8_lossy(&text).into_owned();
            *self.counts.entry(host).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn counts(json: &str) -> Result<BTreeMap<String, usize>, NotAnObject> {
        let mut c = HostCounts::default();
        c.feed(json.as_bytes());
        c.finish()
    }

    /// The same counts from a JSON parser holding the whole answer.
    fn parsed(json: &str) -> BTreeMap<String, usize> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut out = BTreeMap::new();
        let services = v["Services"].as_object().cloned().unwrap_or_default();
        for service in services.values() {
            for task in service["Tasks"].as_array().into_iter().flatten() {
                if let Some(host) = task["Info"]["Host IP"].as_str() {
                    *out.entry(host.to_string()).or_default() += 1;
                }
            }
        }
        out
    }

    fn capture() -> String {
        swarm_sim::captures::read("20.10.24/network-tnet-verbose.json")
    }

    #[test]
    fn counts_a_captured_verbose_network_as_a_parser_does() {
        let raw = capture();
        let got = counts(&raw).unwrap();
        assert_eq!(got, parsed(&raw));
        assert_eq!(got.values().sum::<usize>(), 7, "{got:?}");
        // pretty-printed, as another engine or a proxy might send it
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            counts(&serde_json::to_string_pretty(&v).unwrap()).unwrap(),
            got
        );
    }

    #[test]
    fn counts_only_the_services_task_endpoints() {
        let json = r#"{"Labels":{"Host IP":"10.0.0.9"},"Options":{"x":"\"Host IP\":\"10.0.0.8\""},
            "Services":{"a":{"VIP":"10.1.0.2","Tasks":[{"Info":{"Host IP":"10.0.0.1"}},
            {"Info":{"Host IP":null}},{"Info":{}}]},"b":{"Tasks":null},"c":{}},
            "After":{"Host IP":"10.0.0.7"}}"#;
        let got = counts(json).unwrap();
        assert_eq!(got, BTreeMap::from([("10.0.0.1".to_string(), 1)]));
        assert!(counts(r#"{"Services":null}"#).unwrap().is_empty());
        assert!(counts("{}").unwrap().is_empty());
    }

    #[test]
    fn an_answer_that_is_not_a_whole_object_is_refused() {
        for bad in [
            "",
            "404 page not found",
            r#"{"Services":{"#,
            r#"{"Name":"tne"#,
        ] {
            assert!(counts(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// However the answer is cut into chunks, the counts are the same.
        #[test]
        fn chunk_boundaries_change_nothing(cuts in proptest::collection::vec(0usize..4000, 0..40)) {
            let raw = capture();
            let whole = counts(&raw).unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (raw.len() + 1)).collect();
            cuts.sort_unstable();
            let mut c = HostCounts::default();
            let mut from = 0;
            for cut in cuts.into_iter().chain([raw.len()]) {
                c.feed(&raw.as_bytes()[from..cut]);
                from = cut;
            }
            prop_assert_eq!(c.finish().unwrap(), whole);
        }
    }
}
