//! A real browser for tests: headless Chromium driven over WebDriver by
//! `chromedriver` (Debian's `chromium` and `chromium-driver`), started on
//! a free loopback port and stopped when the [`Browser`] is dropped. The
//! WebDriver client is a few blocking HTTP/1.1 requests to 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium with an empty profile
    /// and no background networking (the machine has no network).
    pub fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver (package chromium-driver): {e}"));
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while browser.request("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let reply = browser
            .request(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
                    "goog:loggingPrefs": {"browser": "ALL"},
                }}})),
            )
            .unwrap_or_else(|e| panic!("cannot start Chromium: {e}"));
        browser.session = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_string();
        browser
    }

    /// One WebDriver command; the `value` of the answer, or the error.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).map_err(|e| e.to_string())?;
        let mut length = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let mut text = Vec::new();
        match length {
            Some(n) => {
                text.resize(n, 0);
                reader.read_exact(&mut text).map_err(|e| e.to_string())?;
            }
            None => {
                reader.read_to_end(&mut text).map_err(|e| e.to_string())?;
            }
        }
        let reply: Value = serde_json::from_slice(&text).map_err(|e| format!("{e}: {status}"))?;
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(format!("{} {}", status.trim(), reply["value"]));
        }
        Ok(reply.get("value").cloned().unwrap_or(Value::Null))
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.request(method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.command("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` in the page; its return value.
    pub fn execute(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The page as the browser has it now.
    pub fn source(&self) -> String {
        self.command("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The visible text of the page (read again when the page was
    /// replaced while it was being read).
    pub fn text(&self) -> String {
        for _ in 0..50 {
            let read = self
                .request(
                    "POST",
                    &format!("/session/{}/element", self.session),
                    Some(json!({"using": "css selector", "value": "body"})),
                )
                .and_then(|body| {
                    let id = body[ELEMENT].as_str().unwrap_or_default();
                    let path = format!("/session/{}/element/{id}/text", self.session);
                    self.request("GET", &path, None)
                });
            match read {
                Ok(text) => return text.as_str().unwrap_or_default().to_string(),
                Err(e) if page_was_replaced(&e) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("WebDriver: reading the page's text: {e}"),
            }
        }
        panic!("the page kept changing while its text was read");
    }

    /// The first element matching the CSS `selector`.
    pub fn find(&self, selector: &str) -> Element {
        let found = self.command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": selector})),
        );
        Element(
            found[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("no element {selector}: {found}"))
                .to_string(),
        )
    }

    /// Types `text` into the element matching `selector`.
    pub fn fill(&self, selector: &str, text: &str) {
        let element = self.find(selector);
        self.command(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        );
    }

    /// Clicks the element matching `selector` (a submit button follows
    /// the form to the next page).
    pub fn click(&self, selector: &str) {
        let element = self.find(selector);
        self.command(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        );
    }

    /// Clicks `selector` (a submit button, a link) and waits, up to 60
    /// seconds, until the browser has loaded another document (which may
    /// be at the same URL, as after an action that redirects back);
    /// returns its URL. A click returns once the browser has sent the
    /// request, not once the answer arrived.
    pub fn click_and_follow(&self, selector: &str) -> String {
        self.execute("window.__beforeClick = true");
        self.click(selector);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = self.execute("return window.__beforeClick !== true") == json!(true);
            let ready = self.execute("return document.readyState") == json!("complete");
            if left && ready {
                return self.url();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still on {} a minute after clicking {selector}",
                self.url()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// What the pages wrote to the console as errors (script exceptions,
    /// refused resources, Content-Security-Policy violations) since the
    /// last call.
    pub fn console_errors(&self) -> Vec<String> {
        let entries = self.command("POST", "/se/log", Some(json!({"type": "browser"})));
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The value of cookie `name`, if the browser has it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.request(
            "GET",
            &format!("/session/{}/cookie/{name}", self.session),
            None,
        )
        .ok()
        .and_then(|c| c["value"].as_str().map(String::from))
    }

    /// A PNG of the window, written to `path` (for looking at a page).
    pub fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let png = self.command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.request("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether a WebDriver error says only that the document changed under
/// the command (a live page swapped its content, or the next page was
/// loading): the command is worth sending again.
fn page_was_replaced(error: &str) -> bool {
    [
        "stale element",
        "does not belong to the document",
        "no such execution context",
        "Cannot find context",
        "no such element",
    ]
    .iter()
    .any(|marker| error.contains(marker))
}
