//! The committed JSON Schema equals the one generated from the Rust types.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds-like-specs/engineupgrade.schema.json")
}

#[test]
fn committed_schema_is_current() {
    let generated = swarm_upgrade::spec::schema_json();
    let path = committed_path();
    if std::env::var_os("SWARM_UPGRADE_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds-like-specs/engineupgrade.schema.json is not the schema generated from the types in \
         controller/src/spec; regenerate it with\n  cargo run -p swarm-upgrade -- schema > crds-like-specs/engineupgrade.schema.json\n\
         (or SWARM_UPGRADE_BLESS=1 cargo test -p swarm-upgrade --test spec_schema)"
    );
}

#[test]
fn schema_is_informative() {
    let schema: serde_json::Value =
        serde_json::from_str(&swarm_upgrade::spec::schema_json()).unwrap();
    let text = schema.to_string();
    for needle in [
        "\"title\":\"EngineUpgrade\"",
        "\"const\":\"swarm-upgrade.io/v1alpha1\"",
        "\"const\":\"EngineUpgrade\"",
        "^([0-9]+(ms|s|m|h))+$",
        "\"mon\"",
        "\"sun\"",
        "{current_version}",
        "never a shell string",
        "\"default\":\"10m\"",
        "\"default\":\"5m\"",
        "\"default\":\"10s\"",
        "\"additionalProperties\":false",
        "\"minItems\":1",
    ] {
        assert!(text.contains(needle), "schema lacks {needle}:\n{schema:#}");
    }
    assert!(swarm_upgrade::spec::schema_json().ends_with("}\n"));
}
