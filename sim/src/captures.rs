//! Real Docker Engine API answers captured from the lab swarm (`testdata/engine-captures/`, see
//! its README): the shapes the simulator must serve and the test vectors of the operator's
//! readers. Shipped in the repository so a clone tests on its own; a missing file is a failure.

use std::path::PathBuf;

/// The folder of the captures, inside this crate.
pub fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/engine-captures"
    ))
}

/// The text of one capture, e.g. `read("20.10.24/nodes.json")`. Panics naming the file when it
/// is missing: a test that cannot read its vector must fail, not pass unchecked.
pub fn read(rel: &str) -> String {
    let path = dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "engine capture {} is missing or unreadable: {e}",
            path.display()
        )
    })
}

/// One capture parsed as `T` (bollard's models, or `serde_json::Value`).
pub fn json<T: serde::de::DeserializeOwned>(rel: &str) -> T {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("engine capture {rel}: {e}"))
}
