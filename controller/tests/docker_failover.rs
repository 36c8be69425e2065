//! The Docker edge against the simulated swarm: API-version negotiation with old and new
//! engines, failover while a manager is away, stale updates, and an unreachable swarm.

use std::time::Duration;

use swarm_sim::{SimConfig, SimHandle, Stack};
use swarm_upgrade::docker::{ApiError, Endpoint, Swarm, connect_negotiated};

fn endpoints(sim: &SimHandle) -> Vec<Endpoint> {
    sim.manager_endpoints()
        .iter()
        .map(|e| Endpoint::parse(e, None).unwrap())
        .collect()
}

async fn sim() -> SimHandle {
    SimHandle::start(SimConfig {
        time_scale: 20.0,
        stack: Stack::None,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_each_engines_api_version() {
    let sim = sim().await;
    let eps = endpoints(&sim);
    let (_, old) = connect_negotiated(&eps[1]).await.unwrap();
    assert_eq!(old, "1.41", "engine 20.10 speaks 1.41");
    sim.sim().upgrade_node("n2", "26.1.5").await.unwrap();
    let (_, new) = connect_negotiated(&eps[1]).await.unwrap();
    assert_eq!(new, "1.45", "engine 26.1 speaks 1.45");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_while_a_manager_is_away_and_back() {
    let sim = sim().await;
    let swarm = Swarm::new(endpoints(&sim)).with_patience(Duration::from_secs(5));
    assert_eq!(swarm.nodes().await.unwrap().len(), 5);
    sim.sim().stop_node("n1").await.unwrap();
    // n1 was the leader and the first endpoint: the others answer (after the election).
    assert_eq!(swarm.nodes().await.unwrap().len(), 5);
    sim.sim().start_node("n1", None).await.unwrap();
    sim.sim().stop_node("n2").await.unwrap();
    assert_eq!(swarm.nodes().await.unwrap().len(), 5);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_version_index_is_out_of_sequence() {
    let sim = sim().await;
    let swarm = Swarm::new(endpoints(&sim));
    let node = swarm.nodes().await.unwrap().remove(3);
    let id = node.id.clone().unwrap();
    let index = node.version.unwrap().index.unwrap();
    let spec = node.spec.unwrap();
    swarm.update_node(&id, spec.clone(), index).await.unwrap();
    let err = swarm.update_node(&id, spec, index).await.unwrap_err();
    assert!(matches!(err, ApiError::OutOfSequence), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_swarm_says_where_it_looked_and_what_to_check() {
    let dead: Vec<Endpoint> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            drop(l);
            Endpoint::parse(&format!("tcp://{addr}"), None).unwrap()
        })
        .collect();
    let swarm = Swarm::new(dead).with_patience(Duration::from_millis(500));
    let started = tokio::time::Instant::now();
    let err = swarm.nodes().await.unwrap_err();
    assert!(matches!(err, ApiError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:"), "{text}");
    assert!(text.contains("--docker-host"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The hostname of the manager that answered a call.
async fn answered_by(swarm: &Swarm) -> String {
    let info = swarm.call(|d| async move { d.info().await }).await.unwrap();
    info.name.unwrap()
}

fn names(infos: &[bollard::models::SystemInfo]) -> Vec<String> {
    infos.iter().map(|i| i.name.clone().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_on_standby_is_avoided_while_another_answers() {
    let sim = sim().await;
    let swarm = Swarm::new(endpoints(&sim));
    let infos = swarm.manager_infos().await;
    assert_eq!(names(&infos), ["n1", "n2", "n3"]);
    assert_eq!(answered_by(&swarm).await, "n1");
    let n1 = infos[0].swarm.as_ref().unwrap().node_id.clone().unwrap();

    let standby = swarm.standby(&n1);
    assert_eq!(answered_by(&swarm).await, "n2", "n1 is on standby");
    assert_eq!(names(&swarm.manager_infos().await), ["n2", "n3"]);
    let again = swarm.standby(&n1);
    drop(standby);
    assert_eq!(
        names(&swarm.manager_infos().await),
        ["n2", "n3"],
        "a second holder keeps n1 on standby"
    );
    drop(again);
    assert_eq!(names(&swarm.manager_infos().await), ["n1", "n2", "n3"]);

    // With n1 as the only endpoint, standby does not stop the calls: they wait for n1.
    let only_n1 = Swarm::new(vec![endpoints(&sim).remove(0)]);
    only_n1.manager_infos().await;
    let _standby = only_n1.standby(&n1);
    assert_eq!(answered_by(&only_n1).await, "n1");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_back_as_an_older_engine_is_asked_in_its_version() {
    let sim = sim().await;
    let eps = endpoints(&sim);
    // One endpoint, so no other manager can answer for it.
    let swarm = Swarm::new(vec![eps[0].clone()]).with_patience(Duration::from_secs(10));
    sim.sim().upgrade_node("n1", "26.1.5").await.unwrap();
    let listed: Vec<serde_json::Value> = swarm.get_json("nodes", "/nodes").await.unwrap();
    assert_eq!(listed.len(), 5, "agreed on 1.45 with engine 26.1");
    // Between two calls the engine restarts as 20.10, which refuses 1.45 ("too new").
    sim.sim().upgrade_node("n1", "20.10.24").await.unwrap();
    let listed: Result<Vec<serde_json::Value>, ApiError> = swarm.get_json("nodes", "/nodes").await;
    assert_eq!(listed.expect("asked again in 1.41").len(), 5);
    sim.shutdown().await;
}
