//! Finding an object by the key a client gives, as the engine does: full ID, then name, then
//! a unique ID prefix.

use super::model::*;
use super::store::*;

impl Cluster {
    /// Finds a node as the engine does: full ID, hostname (or spec name), then unique ID prefix.
    pub fn find_node(&self, key: &str) -> Result<usize, ApiError> {
        let nodes = self.nodes.iter().enumerate().map(|(i, n)| {
            let named = n.hostname == key || n.spec_name.as_deref() == Some(key);
            (i, n.id.as_str(), named)
        });
        resolve_key("node", key, nodes, Ambiguous::Rejected)
    }

    pub fn find_service(&self, key: &str) -> Result<String, ApiError> {
        let services = self
            .services
            .values()
            .map(|s| (s.id.clone(), s.id.as_str(), s.name == key));
        resolve_key("service", key, services, Ambiguous::Rejected)
    }

    pub fn find_network(&self, key: &str) -> Result<String, ApiError> {
        let networks = self
            .networks
            .values()
            .map(|n| (n.id.clone(), n.id.as_str(), n.name == key));
        resolve_key("network", key, networks, Ambiguous::NotFound)
    }
}

#[derive(Clone, Copy)]
pub(super) enum Ambiguous {
    /// 400 "... is ambiguous (N matches found)" (nodes, services).
    Rejected,
    /// 404 "... not found" (networks).
    NotFound,
}

/// The engine's lookup of an object by the key a client gives: exact ID, then name, then a
/// unique ID prefix. `objects` yields (handle, id, whether the name matches the key).
pub(super) fn resolve_key<'a, T>(
    kind: &str,
    key: &str,
    objects: impl Iterator<Item = (T, &'a str, bool)>,
    ambiguous: Ambiguous,
) -> Result<T, ApiError> {
    let mut named = None;
    let mut prefixed = Vec::new();
    for (handle, id, name_matches) in objects {
        if id == key {
            return Ok(handle);
        }
        if name_matches {
            named.get_or_insert(handle);
        } else if !key.is_empty() && id.starts_with(key) {
            prefixed.push(handle);
        }
    }
    if let Some(handle) = named {
        return Ok(handle);
    }
    let matches = prefixed.len();
    match (prefixed.pop(), matches, ambiguous) {
        (Some(handle), 1, _) => Ok(handle),
        (_, 2.., Ambiguous::Rejected) => Err(ApiError::new(
            400,
            format!("{kind} {key} is ambiguous ({matches} matches found)"),
        )),
        _ => Err(ApiError::new(404, format!("{kind} {key} not found"))),
    }
}
