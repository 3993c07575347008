//! A small WebDriver client for the browser tests, on loopback only: headless Chromium through
//! `chromedriver` (Debian's `chromium` and `chromium-driver`) or headless Firefox through
//! `geckodriver` (Debian's `firefox-esr`; geckodriver from crates.io), both installed by
//! `scripts/setup.sh`. Just what the tests use: open a page, run a script, type, click, accept a
//! dialog, take a screenshot.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crawler_fixture::wait::{logged, spawn_listening};
use serde_json::{json, Value};

/// Which browser to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chromium,
    Firefox,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chromium => "chromium",
            Kind::Firefox => "firefox",
        }
    }
}

pub struct Browser {
    client: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Chromium's capabilities: headless, its own profile, nothing but loopback (no background
/// traffic, no name resolution).
fn chromium(profile: &Path) -> Value {
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1280,1000".to_owned(),
        format!("--user-data-dir={}", profile.display()),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-default-apps".to_owned(),
        "--no-proxy-server".to_owned(),
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".to_owned(),
    ];
    json!({"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}})
}

/// Firefox's capabilities: headless, and nothing but loopback: every other address goes to a
/// closed loopback port as its proxy, and the services that call home are off.
fn firefox() -> Value {
    let prefs = json!({
        "network.proxy.type": 1,
        "network.proxy.http": "127.0.0.1",
        "network.proxy.http_port": 9,
        "network.proxy.ssl": "127.0.0.1",
        "network.proxy.ssl_port": 9,
        "network.proxy.no_proxies_on": "127.0.0.1",
        "network.proxy.allow_hijacking_localhost": false,
        "network.trr.mode": 5,
        "network.captive-portal-service.enabled": false,
        "network.connectivity-service.enabled": false,
        "app.update.enabled": false,
        "app.normandy.enabled": false,
        "browser.safebrowsing.malware.enabled": false,
        "browser.safebrowsing.phishing.enabled": false,
        "browser.safebrowsing.downloads.enabled": false,
        "datareporting.policy.dataSubmissionEnabled": false,
        "toolkit.telemetry.enabled": false,
        "extensions.update.enabled": false,
        "services.settings.server": "http://127.0.0.1:9/",
    });
    json!({"browserName": "firefox", "moz:firefoxOptions": {
        "binary": "/usr/bin/firefox-esr",
        "args": ["-headless", "-width=1280", "-height=1000"],
        "prefs": prefs
    }})
}

impl Browser {
    /// Starts the browser's driver on a free port and a headless session.
    pub async fn start(kind: Kind, log_dir: &Path) -> Browser {
        let log = log_dir.join(format!("{}-driver.log", kind.name()));
        let build = |ports: &[u16]| {
            let mut cmd = match kind {
                Kind::Chromium => {
                    let mut c = Command::new("chromedriver");
                    c.arg(format!("--port={}", ports[0]));
                    c
                }
                Kind::Firefox => {
                    let mut c = Command::new("geckodriver");
                    c.args(["--host", "127.0.0.1", "--port", &ports[0].to_string()]);
                    c
                }
            };
            // Its own process group, so that the browser it starts goes with it.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            cmd.stdout(std::fs::File::create(&log).unwrap()).stderr(Stdio::null());
            cmd
        };
        let ready = match kind {
            Kind::Chromium => "started successfully",
            Kind::Firefox => "Listening on",
        };
        let (driver, ports) =
            spawn_listening(1, &log, Duration::from_secs(30), build, |_| logged(&log, ready));
        let base = format!("http://127.0.0.1:{}", ports[0]);
        let profile = tempfile::tempdir().unwrap();
        let caps = match kind {
            Kind::Chromium => chromium(profile.path()),
            Kind::Firefox => firefox(),
        };
        let caps = json!({"capabilities": {"alwaysMatch": caps}});
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
        let resp = client.post(format!("{base}/session")).body(caps.to_string()).send().await.unwrap();
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        Browser { client, base, session, driver, _profile: profile }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.client.request(method, url);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        if v["value"].get("error").is_some() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `return` its result) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .cmd(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css })))
            .await;
        v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).unwrap().to_owned()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    pub async fn accept_dialog(&self) {
        self.cmd(reqwest::Method::POST, "/alert/accept", Some(json!({}))).await;
    }

    /// Saves a PNG of the window.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session (the browser exits) and stops its driver.
    pub async fn close(self) {
        let _ = self.client.delete(format!("{}/session/{}", self.base, self.session)).send().await;
        // Drop stops the driver and whatever browser process is left.
    }
}

impl Drop for Browser {
    /// Kills the driver's whole process group: the driver, and the browser it started (which
    /// would outlive the driver otherwise, e.g. when a test fails before closing the session).
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}
