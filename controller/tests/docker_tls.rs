//! Managers reached over TLS, as `charts/swarm-upgrade` deploys the operator, and what it says
//! when the certificates are wrong. The simulated swarm sits behind a TLS listener made here
//! (rustls, certificates from rcgen) that checks client certificates as `dockerd --tlsverify`
//! does. Each bad configuration is named with the endpoint, the cause and the fix, has its own
//! metric label, and the operator drains nothing.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use swarm_sim::{SimConfig, SimHandle, Stack};
use swarm_upgrade::docker::{ApiError, Endpoint, Swarm, TlsFiles, TlsProblem};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::operator_process::run_in_process;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// (certificate PEM, key PEM) for `names`, for a server or a client.
    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The client's files, as DOCKER_CERT_PATH holds them.
fn client_files(dir: &Path, name: &str, trusted: &Ca, cert: (String, String)) -> TlsFiles {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("ca.pem"), trusted.issuer.pem()).unwrap();
    std::fs::write(d.join("cert.pem"), cert.0).unwrap();
    std::fs::write(d.join("key.pem"), cert.1).unwrap();
    TlsFiles {
        ca: d.join("ca.pem"),
        cert: d.join("cert.pem"),
        key: d.join("key.pem"),
    }
}

/// A TLS front for one simulated manager, requiring a client certificate from `client_ca`
/// (dockerd --tlsverify --tlscacert). Returns its `host:port`.
async fn tls_front(upstream: String, server: (String, String), client_ca: &Ca) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.issuer.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(server.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(server.1.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut engine) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
                }
            });
        }
    });
    addr
}

struct Lab {
    sim: SimHandle,
    dir: tempfile::TempDir,
    ca: Ca,
    other_ca: Ca,
    /// The simulated managers' plain `host:port`.
    managers: Vec<String>,
}

impl Lab {
    async fn start() -> Self {
        let sim = SimHandle::start(SimConfig {
            time_scale: 20.0,
            stack: Stack::None,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let managers = sim
            .manager_endpoints()
            .iter()
            .map(|e| e.trim_start_matches("tcp://").to_string())
            .collect();
        Self {
            sim,
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::new("swarm CA"),
            other_ca: Ca::new("another CA"),
            managers,
        }
    }

    /// Manager `i` behind TLS, its certificate from the swarm's CA naming `names`.
    async fn front(&self, i: usize, names: &[&str]) -> String {
        let server = self.ca.issue(names, ExtendedKeyUsagePurpose::ServerAuth);
        tls_front(self.managers[i].clone(), server, &self.ca).await
    }

    /// The operator's files: trusting `trusted`, its certificate from `issuer`.
    fn client(&self, name: &str, trusted: &Ca, issuer: &Ca) -> TlsFiles {
        let cert = issuer.issue(&["swarm-upgrade"], ExtendedKeyUsagePurpose::ClientAuth);
        client_files(self.dir.path(), name, trusted, cert)
    }

    fn good_client(&self) -> TlsFiles {
        self.client("good", &self.ca, &self.ca)
    }
}

fn tls_endpoint(addr: &str, files: &TlsFiles) -> Endpoint {
    Endpoint::parse(&format!("tcp://{addr}"), Some(files)).unwrap()
}

/// The error of one call through `endpoints` (none may answer).
async fn failure(endpoints: Vec<Endpoint>) -> ApiError {
    let swarm = Swarm::new(endpoints).with_patience(Duration::from_secs(2));
    swarm
        .nodes()
        .await
        .expect_err("the call must fail with this configuration")
}

fn assert_named(err: &ApiError, problem: TlsProblem, addr: &str, says: &[&str]) {
    let ApiError::TlsHandshake(failure) = err else {
        panic!("expected a TLS handshake error, got {err:?}: {err}");
    };
    assert_eq!(failure.problem, problem, "{err}");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.starts_with(&format!("{addr}: ")),
        "no endpoint: {text}"
    );
    assert!(text.contains("Fix: "), "no fix: {text}");
    for s in says {
        assert!(text.contains(s), "{s:?} not in: {text}");
    }
    assert_eq!(err.metric_label(), problem.metric_label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_certificates_reach_the_managers() {
    let lab = Lab::start().await;
    let files = lab.good_client();
    let mut endpoints = vec![];
    for i in 0..3 {
        endpoints.push(tls_endpoint(&lab.front(i, &["127.0.0.1"]).await, &files));
    }
    let swarm = Swarm::new(endpoints);
    assert_eq!(swarm.nodes().await.unwrap().len(), 5);
    // The operator's own GETs (hyper-rustls) take the same files.
    let tasks: serde_json::Value = swarm.get_json("tasks", "/tasks").await.unwrap();
    assert!(tasks.is_array(), "{tasks}");
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_named() {
    let lab = Lab::start().await;
    let files = lab.client("other-ca", &lab.ca, &lab.other_ca);
    let addr = lab.front(0, &["127.0.0.1"]).await;
    let err = failure(vec![tls_endpoint(&addr, &files)]).await;
    let cert = files.cert.display().to_string();
    assert_named(
        &err,
        TlsProblem::ClientCertificateRefused,
        &addr,
        &[
            "refused the operator's client certificate",
            &cert,
            "--tlscacert",
        ],
    );
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_certificate_for_another_name_is_named() {
    let lab = Lab::start().await;
    let files = lab.good_client();
    let addr = lab.front(0, &["manager-1.example"]).await;
    let err = failure(vec![tls_endpoint(&addr, &files)]).await;
    assert_named(
        &err,
        TlsProblem::EngineCertificateNameMismatch,
        &addr,
        &["does not name 127.0.0.1", "subjectAltName"],
    );
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_certificate_from_another_ca_is_named() {
    let lab = Lab::start().await;
    let files = lab.client("trusts-other", &lab.other_ca, &lab.ca);
    let addr = lab.front(0, &["127.0.0.1"]).await;
    let err = failure(vec![tls_endpoint(&addr, &files)]).await;
    let ca = files.ca.display().to_string();
    assert_named(
        &err,
        TlsProblem::EngineCertificateUntrusted,
        &addr,
        &["not signed by the CA in", &ca],
    );
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_http_port_is_named() {
    let lab = Lab::start().await;
    let files = lab.good_client();
    let plain = lab.managers[0].clone();
    let err = failure(vec![tls_endpoint(&plain, &files)]).await;
    assert_named(
        &err,
        TlsProblem::EndpointNotTls,
        &plain,
        &["does not speak TLS"],
    );
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_manager_is_counted_and_the_others_serve() {
    let lab = Lab::start().await;
    let files = lab.good_client();
    let bad = lab.front(0, &["manager-1.example"]).await;
    let good = lab.front(1, &["127.0.0.1"]).await;
    let seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let hook = seen.clone();
    let swarm = Swarm::new(vec![
        tls_endpoint(&bad, &files),
        tls_endpoint(&good, &files),
    ])
    .with_error_hook(Arc::new(move |e| {
        hook.lock().unwrap().push(e.metric_label())
    }));
    assert_eq!(swarm.nodes().await.unwrap().len(), 5);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![TlsProblem::EngineCertificateNameMismatch.metric_label()]
    );
    lab.sim.shutdown().await;
}

/// The operator as `run` starts it, every manager refusing its certificate: `/status` and
/// `/metrics` say why, and no node is drained or labelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reports_a_refused_certificate_and_drains_nothing() {
    let lab = Lab::start().await;
    let files = lab.client("other-ca", &lab.ca, &lab.other_ca);
    let mut endpoints = vec![];
    for i in 0..3 {
        endpoints.push(tls_endpoint(&lab.front(i, &["127.0.0.1"]).await, &files));
    }
    let first = endpoints[0].clone();
    let spec = lab.dir.path().join("spec.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let (base, running) = run_in_process(
        Swarm::new(endpoints).with_patience(Duration::from_secs(1)),
        spec,
    )
    .await;
    let http = swarm_upgrade::http_client::HttpClient::new("test", Duration::from_secs(5));
    let label = TlsProblem::ClientCertificateRefused.metric_label();
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        let body = http
            .get(&format!("{base}/status"), "application/json")
            .await;
        status = serde_json::from_slice(&body.unwrap().body).unwrap();
        if !status["last_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = status["last_error"].as_str().unwrap_or_default();
    let Endpoint::Tcp { addr, .. } = &first else {
        unreachable!()
    };
    assert!(
        error.contains("refused the operator's client certificate") && error.contains("Fix: "),
        "/status: {status}"
    );
    assert!(
        error.contains(&format!("{addr}: ")),
        "no endpoint in /status: {error}"
    );
    let metrics = http.get(&format!("{base}/metrics"), "text/plain").await;
    let metrics = metrics.unwrap().text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("swarm_upgrade_docker_api_errors_total")
                && l.contains(&format!("error=\"{label}\""))),
        "no {label} in /metrics"
    );
    running.abort();
    let plain: Vec<Endpoint> = lab
        .sim
        .manager_endpoints()
        .iter()
        .map(|e| Endpoint::parse(e, None).unwrap())
        .collect();
    for node in Swarm::new(plain).nodes().await.unwrap() {
        let spec = node.spec.unwrap_or_default();
        let name = node
            .description
            .and_then(|d| d.hostname)
            .unwrap_or_default();
        assert_eq!(
            spec.availability,
            Some(bollard::models::NodeSpecAvailabilityEnum::ACTIVE),
            "{name} was drained"
        );
        let labels = spec.labels.unwrap_or_default();
        assert!(
            !labels.keys().any(|k| k.starts_with("swarm-upgrade")),
            "{name} was labelled: {labels:?}"
        );
    }
    lab.sim.shutdown().await;
}

const SPEC: &str = r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata:
  name: tls-test
spec:
  version: "26.1.5"
  upgrade:
    command: ["true"]
"#;
