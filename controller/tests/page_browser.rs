//! The live rollout page in a real browser: `swarm-upgrade demo` upgrades a simulated swarm
//! while Debian's headless Chromium, driven over the DevTools protocol, keeps the page open.
//! The page must load without a console error, show every node, and show their steps change
//! as the rollout advances, by itself (no reload). Screenshots (laptop and phone widths) go
//! to `target/page-browser/`.
//!
//! The DevTools protocol over one WebSocket (tokio-tungstenite) rather than Chromium's
//! one-shot `--dump-dom`: one page stays open through the rollout, so the test sees it update
//! itself, and console errors and exceptions arrive as events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";
const MANAGERS: usize = 3;
const WORKERS: usize = 2;

/// Where this test leaves its screenshots.
fn artefacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let dir = target.join("page-browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the demo and returns it with the page's address, read from its banner.
async fn start_demo(events: &std::path::Path) -> (Child, String) {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_swarm-upgrade"))
        .args(["demo", "--listen", "127.0.0.1:0", "--time-scale", "4"])
        .args(["--serve-for", "60s", "--events"])
        .arg(events)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting swarm-upgrade demo");
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("Watch the rollout: ") {
                return url.trim().to_string();
            }
        }
        panic!("the demo ended without printing the page's address");
    })
    .await
    .expect("the demo prints the page's address");
    // Keep reading its output so the demo never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (demo, url)
}

/// Headless Chromium with a fresh profile, and the DevTools WebSocket address it printed.
async fn start_chromium(profile: &std::path::Path) -> (Child, String) {
    let mut chromium = Command::new(CHROMIUM)
        .args(swarm_upgrade::page::export::headless_flags(profile))
        .args(["--remote-debugging-port=0", "about:blank"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting chromium (apt install chromium)");
    let mut lines = BufReader::new(chromium.stderr.take().unwrap()).lines();
    let ws = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find("ws://") {
                return line[at..].trim().to_string();
            }
        }
        panic!("chromium ended without printing its DevTools address");
    })
    .await
    .expect("chromium prints its DevTools address");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (chromium, ws)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page of a browser over the DevTools protocol; the console errors and uncaught
/// exceptions it reported are kept.
struct DevTools {
    socket: Socket,
    session: Option<String>,
    next_id: u64,
    errors: Vec<String>,
}

impl DevTools {
    async fn connect(ws: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
        let mut tools = Self {
            socket,
            session: None,
            next_id: 0,
            errors: vec![],
        };
        let target = tools
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = tools
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        tools.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            tools.call(domain, json!({})).await;
        }
        tools
    }

    /// Sends a command and waits for its answer, keeping the events that come meanwhile.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let Some(frame) = self.socket.next().await else {
                    panic!("chromium closed the DevTools connection");
                };
                let Message::Text(text) = frame.unwrap() else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == json!(id) {
                    return value;
                }
                self.keep_error(&value);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    fn keep_error(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!(
                "exception: {}",
                params["exceptionDetails"]["exception"]["description"]
            )),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => self
                .errors
                .push(format!("console.error: {}", params["args"])),
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => self
                .errors
                .push(format!("log: {}", params["entry"]["text"])),
            _ => {}
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// A full-page PNG at `width` CSS pixels (phone widths laid out as a phone).
    async fn screenshot(&mut self, width: u32, path: &std::path::Path) {
        let mobile = width < 600;
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
        // Let the page lay itself out at the new width before the picture.
        self.eval("new Promise(r => requestAnimationFrame(() => r(true)))")
            .await;
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
    }
}

/// Each node card's hostname and the step it shows.
const NODE_STEPS: &str = "Object.fromEntries([...document.querySelectorAll('#nodes .node')]\
    .map(n => [n.dataset.node, n.querySelector('.step').textContent]))";

#[tokio::test]
#[ignore = "needs chromium (apt install chromium)"]
async fn the_page_follows_a_simulated_rollout_in_chromium() {
    assert!(
        std::path::Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: apt install chromium"
    );
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let (mut demo, url) = start_demo(&events).await;
    let (_chromium, ws) = start_chromium(&dir.path().join("profile")).await;
    let mut page = DevTools::connect(&ws).await;
    page.call("Page.navigate", json!({"url": url})).await;
    let artefacts = artefacts_dir();

    // What the page showed, read every 200 ms until it shows every node at the target.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut mid_rollout_shot = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let shown: BTreeMap<String, String> =
            serde_json::from_value(page.eval(NODE_STEPS).await).unwrap();
        for (node, step) in &shown {
            let steps = seen.entry(node.clone()).or_default();
            if steps.last() != Some(step) {
                steps.push(step.clone());
            }
        }
        let done = shown.values().filter(|s| *s == "at target").count();
        if !mid_rollout_shot && done >= 3 && done < shown.len() {
            // The README's picture: the rollout half way, the timeline growing.
            page.screenshot(1280, &artefacts.join("rollout-page-mid.png"))
                .await;
            mid_rollout_shot = true;
        }
        if shown.len() == MANAGERS + WORKERS && done == shown.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never showed every node at the target; it showed {shown:?}, steps seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The timeline catches up at most a second after the status.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    page.screenshot(1280, &artefacts.join("rollout-page.png"))
        .await;
    page.screenshot(390, &artefacts.join("rollout-page-phone.png"))
        .await;

    let hostnames: BTreeSet<String> = swarm_upgrade::events::read_events(&events)
        .unwrap()
        .into_iter()
        .filter(|e| !e.hostname.is_empty())
        .map(|e| e.hostname)
        .collect();
    assert_eq!(hostnames.len(), MANAGERS + WORKERS, "{hostnames:?}");
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        hostnames,
        "the page shows every node of the rollout"
    );
    for (node, steps) in &seen {
        // Every node was seen at one of its steps, then at the target.
        let busy = |s: &String| s != "pending" && s != "at target";
        assert!(
            steps.iter().any(busy) && steps.last().map(String::as_str) == Some("at target"),
            "{node}: the page showed {steps:?}"
        );
    }
    assert!(
        seen.values().any(|steps| steps[0] == "pending"),
        "no node was seen waiting its turn: {seen:?}"
    );
    let changes = page
        .eval("document.querySelectorAll('#changes li').length")
        .await;
    assert!(
        changes.as_u64().unwrap() >= 2 * (MANAGERS + WORKERS) as u64,
        "the page logged {changes} step changes it saw by itself"
    );
    let timeline_rows = page
        .eval("document.querySelectorAll('#timeline g.row').length")
        .await;
    assert_eq!(timeline_rows, json!(MANAGERS + WORKERS), "timeline rows");
    assert!(
        mid_rollout_shot,
        "no moment with some nodes done and some not"
    );
    assert!(
        page.errors.is_empty(),
        "the page reported errors: {:#?}",
        page.errors
    );
    let _ = demo.kill().await;
    eprintln!("screenshots in {}", artefacts.display());
}
