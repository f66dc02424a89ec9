//! A real headless Chromium for dashboard tests, driven by chromedriver over W3C WebDriver
//! (plain JSON over HTTP on a loopback port). Only the few commands the tests need.
//!
//! Debian's `/usr/bin/chromium` and `/usr/bin/chromedriver` (packages `chromium` and
//! `chromium-driver`; scripts/test.sh installs them). `OPAMP_GITOPS_CHROMIUM` and
//! `OPAMP_GITOPS_CHROMEDRIVER` point elsewhere.

use base64::Engine as _;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long `Browser::wait` waits by default.
pub const WAIT: Duration = Duration::from_secs(15);

fn binary(var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} not found: the dashboard tests drive a real headless Chromium. Install it with \
         `apt-get install -y chromium chromium-driver` (scripts/test.sh does), or set {var}. \
         Missing Debian package: {package}",
        path.display()
    );
    path
}

/// A WebDriver error answer.
#[derive(Debug)]
pub struct WebDriverError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: ureq::Agent,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session.
    pub fn start() -> Browser {
        let chromium = binary("OPAMP_GITOPS_CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = binary(
            "OPAMP_GITOPS_CHROMEDRIVER",
            "/usr/bin/chromedriver",
            "chromium-driver",
        );
        let profile = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = profile.path().join("chromedriver.log");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http,
            profile,
        };
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = browser.raw("GET", "/status", None) {
                if status["ready"] == true {
                    break;
                }
            }
            if let Ok(Some(exit)) = browser.driver.try_wait() {
                panic!(
                    "chromedriver exited at start ({exit}):\n{}",
                    browser.log_tail()
                );
            }
            assert!(
                Instant::now() < until,
                "chromedriver not ready within 20 s:\n{}",
                browser.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let user_data = browser.profile.path().join("profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            // Prompts stay open until the test answers them.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1440,1000",
                    "--force-device-scale-factor=1",
                    "--lang=en-US",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
        }}});
        let session = browser
            .raw("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot open a Chromium session: {e:?}\n{}",
                    browser.log_tail()
                )
            });
        browser.session = session["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.profile.path().join("chromedriver.log"))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// One WebDriver command; its `value`, or the error it answered.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WebDriverError> {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "GET" => self.http.get(&url).call(),
            "DELETE" => self.http.delete(&url).call(),
            _ => self
                .http
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut response = response.map_err(|e| WebDriverError {
            status: 0,
            error: "transport".into(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(WebDriverError {
                status,
                error: value["error"].as_str().unwrap_or("unknown").to_owned(),
                message: value["message"].as_str().unwrap_or(&text).to_owned(),
            })
        }
    }

    /// A command in this session; errors are returned.
    pub fn try_cmd(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
    }

    /// A command in this session; errors fail the test.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e:?}"))
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching a CSS selector, if any.
    pub fn try_find(&self, css: &str) -> Option<String> {
        self.try_cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(str::to_owned))
    }

    pub fn find(&self, css: &str) -> String {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches `{css}` on {}", self.url()))
    }

    pub fn find_all(&self, css: &str) -> Vec<String> {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|v| v[ELEMENT].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
    }

    pub fn click(&self, element: &str) {
        self.cmd("POST", &format!("/element/{element}/click"), None);
    }

    /// Types into an input (keys are appended to what it holds).
    pub fn type_text(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn clear(&self, element: &str) {
        self.cmd("POST", &format!("/element/{element}/clear"), None);
    }

    /// The rendered (visible) text of an element.
    pub fn text(&self, element: &str) -> String {
        self.cmd("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script (a function body: use `return`) with arguments, and returns its result.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The text of the open alert, confirm or prompt, if one is open.
    pub fn alert_text(&self) -> Option<String> {
        self.try_cmd("GET", "/alert/text", None)
            .ok()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    /// Types into the open prompt and accepts it.
    pub fn answer_prompt(&self, text: &str) {
        self.cmd("POST", "/alert/text", Some(json!({ "text": text })));
        self.cmd("POST", "/alert/accept", None);
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let data = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 PNG"))
            .expect("valid base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Polls `check` every 50 ms until it returns Some, failing after `deadline` with `what`
    /// and the last value `describe` saw.
    pub fn wait_for<T>(
        &self,
        deadline: Duration,
        what: &str,
        mut check: impl FnMut(&Browser) -> Option<T>,
        describe: impl Fn(&Browser) -> String,
    ) -> T {
        let until = Instant::now() + deadline;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if Instant::now() > until {
                panic!(
                    "timed out after {deadline:?} waiting for {what}; page {} shows: {}",
                    self.url(),
                    describe(self)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `script` (a function body) returns something truthy; returns it.
    pub fn wait_script(&self, what: &str, script: &str, args: Value) -> Value {
        self.wait_for(
            WAIT,
            what,
            |b| {
                let v = b.exec(script, args.clone());
                let truthy = !matches!(&v, Value::Null | Value::Bool(false))
                    && v != json!("")
                    && v != json!(0);
                truthy.then_some(v)
            },
            |b| {
                let text = b.exec(
                    "return document.body ? document.body.innerText : ''",
                    json!([]),
                );
                text.as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(2000)
                    .collect()
            },
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
