//! Serde helpers for the engine's JSON, shared by the lean views of its answers
//! (`observe::views`, `docker`'s network endpoints): a leaf module, so neither imports the other.

use serde::{Deserialize, Deserializer};

/// A field the engine sends as `null` (or leaves out) reads as its default.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
