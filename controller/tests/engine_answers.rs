//! Bad answers from the engine, served by a tiny scripted fake engine: malformed JSON, missing
//! fields, an unknown API version, a runaway answer, two engines claiming one node. Each is a
//! typed error with its metric label, and a retry; none is a panic or a wrong view.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use swarm_sim::captures;
use swarm_upgrade::docker::{ApiError, Endpoint, Swarm, connect_negotiated};
use swarm_upgrade::observe::ObservedNode;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the fake engine answers to one request.
#[derive(Clone)]
enum Reply {
    Json(u16, Bytes),
    /// A 200 whose body never ends before `total` bytes, sent in 64 KiB chunks as they are read.
    Endless {
        total: u64,
    },
}

impl Reply {
    fn ok(v: &Value) -> Self {
        Reply::Json(200, Bytes::from(serde_json::to_vec(v).unwrap()))
    }

    fn raw(text: &str) -> Self {
        Reply::Json(200, Bytes::from(text.to_string()))
    }
}

/// A scripted engine: per path (the API version prefix and the query left out) a queue of
/// replies, then a standing reply. Counts requests per path and the body bytes it produced.
#[derive(Default)]
struct Script {
    queued: HashMap<String, VecDeque<Reply>>,
    standing: HashMap<String, Reply>,
    hits: HashMap<String, usize>,
}

#[derive(Clone)]
struct FakeEngine {
    script: Arc<Mutex<Script>>,
    produced: Arc<AtomicU64>,
    addr: SocketAddr,
}

impl FakeEngine {
    /// An engine 26.1.5 (API 1.45) whose node, service and network lists are the lab's.
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let engine = FakeEngine {
            script: Arc::default(),
            produced: Arc::default(),
            addr: listener.local_addr().unwrap(),
        };
        engine.answer(
            "/version",
            Reply::raw(&captures::read("26.1.5/version.json")),
        );
        engine.answer("/info", Reply::raw(&captures::read("20.10.24/info.json")));
        engine.answer("/nodes", Reply::ok(&lab_nodes()));
        let served = engine.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let engine = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let engine = engine.clone();
                        async move { Ok::<_, Infallible>(engine.reply(req.uri().path())) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        engine
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::parse(&format!("tcp://{}", self.addr), None).unwrap()
    }

    /// From now on, `path` answers `reply`.
    fn answer(&self, path: &str, reply: Reply) {
        let mut script = self.script.lock().unwrap();
        script.queued.remove(path);
        script.standing.insert(path.to_string(), reply);
    }

    /// The next requests of `path` answer `replies`, one each, before the standing reply.
    fn first(&self, path: &str, replies: Vec<Reply>) {
        let mut script = self.script.lock().unwrap();
        script
            .queued
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    fn hits(&self, path: &str) -> usize {
        self.script
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn reply(&self, path: &str) -> hyper::Response<Body> {
        // "/v1.45/nodes" -> "/nodes"; bollard asks "/version" with its own version first.
        let path = match path.strip_prefix("/v") {
            Some(rest) => rest.find('/').map_or(path, |i| &rest[i..]),
            None => path,
        };
        let reply = {
            let mut script = self.script.lock().unwrap();
            *script.hits.entry(path.to_string()).or_default() += 1;
            let queued = script.queued.get_mut(path).and_then(VecDeque::pop_front);
            queued.or_else(|| script.standing.get(path).cloned())
        };
        let (status, body) = match reply {
            Some(Reply::Json(status, body)) => (status, Full::new(body).boxed()),
            Some(Reply::Endless { total }) => (200, self.endless(total)),
            None => (
                404,
                Full::new(Bytes::from_static(b"{\"message\":\"page not found\"}")).boxed(),
            ),
        };
        hyper::Response::builder()
            .status(status)
            .header("Content-Type", "application/json")
            .header("Api-Version", "1.45")
            .body(body)
            .unwrap()
    }

    fn endless(&self, total: u64) -> Body {
        const CHUNK: usize = 64 * 1024;
        let produced = self.produced.clone();
        let chunks = futures::stream::iter((0..total.div_ceil(CHUNK as u64)).map(move |i| {
            produced.fetch_add(CHUNK as u64, Ordering::Relaxed);
            let byte = if i == 0 { b'[' } else { b' ' };
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![byte; CHUNK])))
        }));
        StreamBody::new(chunks).boxed()
    }
}

fn lab_nodes() -> Value {
    captures::json("20.10.24/nodes.json")
}

/// A change to one node's JSON.
type NodeEdit = fn(&mut serde_json::Map<String, Value>);

/// The lab's node list with `edit` applied to its first node.
fn nodes_with(edit: impl Fn(&mut serde_json::Map<String, Value>)) -> Value {
    let mut nodes = lab_nodes();
    edit(nodes[0].as_object_mut().unwrap());
    nodes
}

/// A client of `engines` whose failures are recorded by metric label, as the operator counts
/// them in `swarm_upgrade_docker_api_errors_total`.
fn swarm(engines: &[&FakeEngine], patience: Duration) -> (Swarm, Arc<Mutex<Vec<&'static str>>>) {
    let labels: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let seen = labels.clone();
    let swarm = Swarm::new(engines.iter().map(|e| e.endpoint()).collect())
        .with_patience(patience)
        .with_error_hook(Arc::new(move |e: &ApiError| {
            seen.lock().unwrap().push(e.metric_label())
        }));
    (swarm, labels)
}

async fn list_nodes(swarm: &Swarm) -> Result<Vec<ObservedNode>, ApiError> {
    swarm.get_json("nodes", "/nodes").await
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_and_is_retried() {
    let engine = FakeEngine::start().await;
    let good = serde_json::to_string(&lab_nodes()).unwrap();
    let malformed = vec![
        Reply::raw(&good[..good.len() / 2]),
        Reply::raw("<html><body>502 Bad Gateway</body></html>"),
        Reply::raw("null"),
        Reply::raw("{\"ID\": \"x\"}"),
        Reply::raw(""),
        Reply::raw("[{\"ID\": 7}]"),
    ];
    let bad = malformed.len();
    engine.first("/nodes", malformed);
    let (swarm, labels) = swarm(&[&engine], Duration::from_secs(20));
    let nodes = list_nodes(&swarm)
        .await
        .expect("the good answer after the bad ones");
    assert_eq!(nodes.len(), 5);
    assert_eq!(*labels.lock().unwrap(), vec!["decode"; bad]);
    assert_eq!(engine.hits("/nodes"), bad + 1);
}

#[tokio::test]
async fn a_node_without_its_role_or_availability_is_refused_not_defaulted() {
    let engine = FakeEngine::start().await;
    let (swarm, labels) = swarm(&[&engine], Duration::from_millis(400));
    let edits: [(&str, NodeEdit); 4] = [
        ("Spec.Availability", |n| {
            n["Spec"].as_object_mut().unwrap().remove("Availability");
        }),
        ("Spec.Role", |n| {
            n["Spec"].as_object_mut().unwrap().remove("Role");
        }),
        ("Spec", |n| {
            n.remove("Spec");
        }),
        ("ID", |n| {
            n.remove("ID");
        }),
    ];
    for (missing, edit) in edits {
        labels.lock().unwrap().clear();
        let hits_before = engine.hits("/nodes");
        engine.answer("/nodes", Reply::ok(&nodes_with(edit)));
        let err = list_nodes(&swarm).await.expect_err(missing);
        assert!(
            matches!(err, ApiError::Decode { call: "nodes", .. }),
            "{missing}: {err}"
        );
        assert_eq!(err.metric_label(), "decode");
        let tries = engine.hits("/nodes") - hits_before;
        assert!(tries >= 2, "{missing}: tried {tries} times, not retried");
        assert!(
            labels.lock().unwrap().iter().all(|l| *l == "decode"),
            "{missing}"
        );
        println!("missing {missing}: {err} ({tries} tries)");
    }
    engine.answer("/nodes", Reply::ok(&lab_nodes()));
    assert_eq!(list_nodes(&swarm).await.unwrap().len(), 5);
}

fn version_answer(api_version: Option<&str>) -> Reply {
    let mut v: Value = captures::json("26.1.5/version.json");
    match api_version {
        Some(a) => v["ApiVersion"] = Value::from(a),
        None => {
            v.as_object_mut().unwrap().remove("ApiVersion");
        }
    }
    Reply::ok(&v)
}

#[tokio::test]
async fn an_unknown_api_version_is_a_typed_error_and_is_retried() {
    let engine = FakeEngine::start().await;
    for reported in [Some("banana"), None, Some("1.12"), Some("0.1"), Some("1.")] {
        engine.answer("/version", version_answer(reported));
        let err = connect_negotiated(&engine.endpoint())
            .await
            .expect_err("refused");
        assert!(
            matches!(err, ApiError::ApiVersion { .. }),
            "{reported:?}: {err}"
        );
        assert_eq!(err.metric_label(), "api_version");
        println!("ApiVersion {reported:?}: {err}");
    }
    // Newer than the client: the client's own version is used.
    engine.answer("/version", version_answer(Some("1.99")));
    let (_, agreed) = connect_negotiated(&engine.endpoint()).await.unwrap();
    assert_eq!(agreed, "1.53");

    // Through the client: the engine answers sensibly on the third try.
    engine.answer("/version", version_answer(Some("1.45")));
    engine.first(
        "/version",
        vec![version_answer(Some("banana")), version_answer(None)],
    );
    let (swarm, labels) = swarm(&[&engine], Duration::from_secs(20));
    assert_eq!(list_nodes(&swarm).await.unwrap().len(), 5);
    assert_eq!(*labels.lock().unwrap(), vec!["api_version", "api_version"]);
}

#[tokio::test]
async fn a_huge_answer_is_cut_at_the_bound_and_is_retried() {
    let engine = FakeEngine::start().await;
    const LIMIT: usize = 1024 * 1024;
    const SERVED: u64 = 1024 * 1024 * 1024;
    engine.answer("/nodes", Reply::Endless { total: SERVED });
    let (swarm, labels) = swarm(&[&engine], Duration::from_millis(600));
    let swarm = swarm.with_max_answer_bytes(LIMIT);
    let err = list_nodes(&swarm).await.expect_err("too large");
    assert!(
        matches!(
            err,
            ApiError::TooLarge {
                call: "nodes",
                limit: LIMIT,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.metric_label(), "too_large");
    let tries = engine.hits("/nodes");
    let produced = engine.produced.load(Ordering::Relaxed);
    println!(
        "a {SERVED}-byte answer, limit {LIMIT}: {tries} tries, {produced} bytes produced by the engine in all ({} per try)",
        produced / tries as u64
    );
    assert!(tries >= 2, "retried: {tries}");
    assert!(labels.lock().unwrap().iter().all(|l| *l == "too_large"));
    // What the engine produced is what the client read plus the sockets' buffers.
    assert!(
        produced / (tries as u64) < 16 * LIMIT as u64,
        "{produced} bytes produced in {tries} tries: the read is not bounded"
    );

    // Under the limit, the answer is read as usual.
    engine.answer("/nodes", Reply::ok(&lab_nodes()));
    assert_eq!(list_nodes(&swarm).await.unwrap().len(), 5);
}

/// `20.10.24/info.json` as the engine of `node_id`, named `name`.
fn info_as(node_id: &str, name: &str) -> Reply {
    let mut info: Value = captures::json("20.10.24/info.json");
    info["Swarm"]["NodeID"] = Value::from(node_id);
    info["Name"] = Value::from(name);
    Reply::ok(&info)
}

#[tokio::test]
async fn two_engines_claiming_one_node_are_not_believed() {
    let (a, b) = (FakeEngine::start().await, FakeEngine::start().await);
    let nodes = lab_nodes();
    let id = |i: usize| nodes[i]["ID"].as_str().unwrap().to_string();
    let (swarm, labels) = swarm(&[&a, &b], Duration::from_secs(2));

    a.answer("/info", info_as(&id(0), "n2"));
    b.answer("/info", info_as(&id(2), "n1"));
    let infos = swarm.manager_infos().await;
    let claimed: Vec<_> = infos
        .iter()
        .map(|i| {
            (
                i.swarm.as_ref().unwrap().node_id.clone().unwrap(),
                i.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(claimed, vec![(id(0), "n2".into()), (id(2), "n1".into())]);
    assert!(labels.lock().unwrap().is_empty());

    // b's engine now says it is a's node, under another name (the wrong hostname would be
    // handed to the upgrade command).
    b.answer("/info", info_as(&id(0), "n1"));
    let infos = swarm.manager_infos().await;
    assert!(infos.is_empty(), "neither claim is used: {infos:?}");
    assert_eq!(*labels.lock().unwrap(), vec!["identity_conflict"]);

    // Garbage from one engine: that engine's view is left out, the other's is used.
    b.answer("/info", Reply::raw("{\"Swarm\": 5}"));
    let infos = swarm.manager_infos().await;
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].name.as_deref(), Some("n2"));
}
