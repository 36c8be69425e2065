//! The README's and the command line's examples, run against the real binary (trycmd), so the
//! documentation cannot drift from what the program does.

#[test]
fn documented_commands() {
    trycmd::TestCases::new()
        .default_bin_name("swarm-upgrade")
        .register_bin(
            "swarm-upgrade",
            std::path::Path::new(env!("CARGO_BIN_EXE_swarm-upgrade")),
        )
        .case("tests/cmd/*.trycmd")
        .case("../README.md");
}

/// The committed schema is what the binary generates.
#[test]
fn committed_schema_is_what_the_binary_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_swarm-upgrade"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds-like-specs/engineupgrade.schema.json"
    ))
    .unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == committed,
        "crds-like-specs/engineupgrade.schema.json is stale: run `cargo run -- schema > crds-like-specs/engineupgrade.schema.json`"
    );
}
