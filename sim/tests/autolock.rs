//! Autolock through the Docker API: turning it on, the unlock key, a manager that comes up locked
//! after an engine restart (and what the other managers see of it), and unlocking it.

mod common;

use common::*;
use serde_json::Value;

const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";

async fn swarm_spec_with_autolock(ep: &str, on: bool) -> (u64, String) {
    let swarm = get_json(ep, "/v1.41/swarm").await;
    let version = swarm["Version"]["Index"].as_u64().unwrap();
    let mut spec = swarm["Spec"].clone();
    spec["EncryptionConfig"]["AutoLockManagers"] = Value::Bool(on);
    (version, spec.to_string())
}

fn message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autolocked_manager_comes_up_locked_until_unlocked_with_the_key() {
    let h = start_default().await;
    let n1 = h.endpoint("n1").await.unwrap();
    let n2 = h.endpoint("n2").await.unwrap();
    let key = get_json(&n1, "/swarm/unlockkey").await;
    assert_eq!(key["UnlockKey"], "", "no key while autolock is off");

    // `docker swarm update --autolock=true`: the whole spec with the version read.
    let (version, spec) = swarm_spec_with_autolock(&n1, true).await;
    let stale = format!(
        "/v1.41/swarm/update?version={}&rotateWorkerToken=false&rotateManagerToken=false&rotateManagerUnlockKey=false",
        version - 1
    );
    let (s, b) = http(&n1, "POST", &stale, Some(&spec)).await;
    assert_eq!(
        (s, message(&b).as_str()),
        (
            500,
            "rpc error: code = Unknown desc = update out of sequence"
        )
    );
    let path = format!(
        "/v1.41/swarm/update?version={version}&rotateWorkerToken=false&rotateManagerToken=false&rotateManagerUnlockKey=false"
    );
    let (s, b) = http(&n1, "POST", &path, Some(&spec)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let swarm = get_json(&n1, "/swarm").await;
    assert_eq!(swarm["Spec"]["EncryptionConfig"]["AutoLockManagers"], true);
    assert!(swarm["Version"]["Index"].as_u64().unwrap() > version);
    let key = get_json(&n1, "/swarm/unlockkey").await["UnlockKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(key.starts_with("SWMKEY-1-") && key.len() > 40, "{key}");

    // n2's engine restarts on the new version: it comes up locked.
    let n2_id = get_json(&n1, "/nodes/n2").await["ID"]
        .as_str()
        .unwrap()
        .to_string();
    h.sim().upgrade_node("n2", "26.1.5").await.unwrap();
    let info = get_json(&n2, "/info").await;
    assert_eq!(
        info["ServerVersion"], "26.1.5",
        "its own engine is the new one"
    );
    assert_eq!(info["Swarm"]["LocalNodeState"], "locked");
    assert_eq!(info["Swarm"]["NodeID"], "");
    assert_eq!(info["Swarm"]["ControlAvailable"], false);
    assert_eq!(info["Swarm"]["Error"], LOCKED);
    assert!(
        info["Swarm"]["NodeAddr"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
    );
    let (s, b) = http(&n2, "GET", "/nodes", None).await;
    assert_eq!((s, message(&b).as_str()), (503, LOCKED));
    let (_, headers, _) = try_http(&n2, "GET", "/_ping", None).await.unwrap();
    assert_eq!(headers["swarm"], "locked");

    // The other managers see it down and unreachable, with the description it had.
    wait_for("n2 down as n1 sees it", 30, || async {
        let n = get_json(&n1, "/nodes/n2").await;
        (n["Status"]["State"] == "down" && n["ManagerStatus"]["Reachability"] == "unreachable")
            .then_some(n)
    })
    .await;
    let n = get_json(&n1, "/nodes/n2").await;
    assert_eq!(n["Description"]["Engine"]["EngineVersion"], "20.10.24");

    // A malformed key and a wrong one are refused as the engine refuses them; n2 stays locked.
    let unlock = |k: &str| format!(r#"{{"UnlockKey":"{k}"}}"#);
    let (s, b) = http(
        &n2,
        "POST",
        "/v1.45/swarm/unlock",
        Some(&unlock("not-a-key")),
    )
    .await;
    assert_eq!((s, message(&b).as_str()), (400, "invalid key string"));
    let wrong = format!("SWMKEY-1-{}", "A".repeat(43));
    let (s, b) = http(&n2, "POST", "/v1.45/swarm/unlock", Some(&unlock(&wrong))).await;
    assert_eq!(
        (s, message(&b).as_str()),
        (401, "swarm could not be unlocked: invalid key provided")
    );
    assert_eq!(
        get_json(&n2, "/info").await["Swarm"]["LocalNodeState"],
        "locked"
    );

    // The key unlocks it: it works as a manager again and reports its new engine.
    let (s, b) = http(&n2, "POST", "/v1.45/swarm/unlock", Some(&unlock(&key))).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let info = get_json(&n2, "/info").await;
    assert_eq!(info["Swarm"]["LocalNodeState"], "active");
    assert_eq!(info["Swarm"]["NodeID"], n2_id.as_str());
    wait_for("n2 ready at 26.1.5", 30, || async {
        let n = get_json(&n1, "/nodes/n2").await;
        (n["Status"]["State"] == "ready"
            && n["ManagerStatus"]["Reachability"] == "reachable"
            && n["Description"]["Engine"]["EngineVersion"] == "26.1.5")
            .then_some(())
    })
    .await;
    let (s, b) = http(&n2, "POST", "/v1.45/swarm/unlock", Some(&unlock(&key))).await;
    assert_eq!((s, message(&b).as_str()), (409, "swarm is not locked"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_do_not_lock_and_autolock_off_unlocks_nothing_more() {
    let h = start_default().await;
    let n1 = h.endpoint("n1").await.unwrap();
    let (version, spec) = swarm_spec_with_autolock(&n1, true).await;
    let (s, _) = http(
        &n1,
        "POST",
        &format!("/swarm/update?version={version}"),
        Some(&spec),
    )
    .await;
    assert_eq!(s, 200);
    // A worker holds no raft keys: it rejoins by itself.
    h.sim().upgrade_node("n4", "26.1.5").await.unwrap();
    wait_for("n4 ready at 26.1.5", 30, || async {
        let n = get_json(&n1, "/nodes/n4").await;
        (n["Status"]["State"] == "ready" && n["Description"]["Engine"]["EngineVersion"] == "26.1.5")
            .then_some(())
    })
    .await;
    // Autolock off again: a restarted manager comes back by itself, with no key asked.
    let (version, spec) = swarm_spec_with_autolock(&n1, false).await;
    let (s, _) = http(
        &n1,
        "POST",
        &format!("/swarm/update?version={version}"),
        Some(&spec),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(get_json(&n1, "/swarm/unlockkey").await["UnlockKey"], "");
    h.sim().upgrade_node("n3", "26.1.5").await.unwrap();
    let n3 = h.endpoint("n3").await.unwrap();
    assert_eq!(
        get_json(&n3, "/info").await["Swarm"]["LocalNodeState"],
        "active"
    );
    h.shutdown().await;
}

const DOCKER: &str = "/usr/local/bin/docker";

/// The real docker CLI with `input` on its standard input.
async fn docker(host: &str, args: &[&str], input: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(DOCKER)
        .arg("-H")
        .arg(host)
        .args(args)
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("swarm-sim-docker-config"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the docker CLI (/usr/local/bin/docker): cargo test --workspace -- --ignored"]
async fn the_docker_cli_turns_autolock_on_and_unlocks_a_manager() {
    assert!(
        std::path::Path::new(DOCKER).exists(),
        "no docker CLI: install one (the machine image ships /usr/local/bin/docker 28.2.2)"
    );
    let h = start_default().await;
    let n1 = h.endpoint("n1").await.unwrap();
    let n2 = h.endpoint("n2").await.unwrap();
    let (ok, out, err) = docker(&n1, &["swarm", "update", "--autolock=true"], "").await;
    assert!(ok, "{err}");
    assert!(
        out.contains("Swarm updated.") && out.contains("SWMKEY-1-"),
        "{out}"
    );
    let (ok, key, err) = docker(&n1, &["swarm", "unlock-key", "-q"], "").await;
    assert!(ok, "{err}");
    let key = key.trim().to_string();
    assert!(
        out.contains(&key),
        "the key printed by update is the unlock key: {out}"
    );

    let (ok, _, err) = docker(&n2, &["swarm", "unlock"], &format!("{key}\n")).await;
    assert!(!ok && err.contains("swarm is not locked"), "{err}");
    h.sim().upgrade_node("n2", "26.1.5").await.unwrap();
    let (ok, out, _) = docker(&n2, &["info", "--format", "{{.Swarm.LocalNodeState}}"], "").await;
    assert!(ok && out.trim() == "locked", "{out}");
    let wrong = format!("SWMKEY-1-{}\n", "A".repeat(43));
    let (ok, _, err) = docker(&n2, &["swarm", "unlock"], &wrong).await;
    assert!(
        !ok && err.contains("swarm could not be unlocked: invalid key provided"),
        "{err}"
    );
    let (ok, _, err) = docker(&n2, &["swarm", "unlock"], &format!("{key}\n")).await;
    assert!(ok, "{err}");
    let (ok, out, _) = docker(&n2, &["info", "--format", "{{.Swarm.LocalNodeState}}"], "").await;
    assert!(ok && out.trim() == "active", "{out}");
    h.shutdown().await;
}
