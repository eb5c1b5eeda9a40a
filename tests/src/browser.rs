//! A real browser for page tests: Debian's `chromium`, headless, driven over the W3C WebDriver
//! protocol by `chromedriver` (both installed by `scripts/setup.sh --test-tools`). The protocol is
//! plain JSON over HTTP, spoken here with reqwest: open a page, find elements by CSS selector,
//! read their text, click them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key W3C WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver with one headless chromium session; both stopped on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(name)).find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub async fn start() -> Self {
        let driver_bin = which("chromedriver").expect("chromedriver not found: run scripts/setup.sh --test-tools");
        let chromium = which("chromium").expect("chromium not found: run scripts/setup.sh --test-tools");
        let port = crate::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < end, "chromedriver not ready within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            "--lang=zh-CN",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let mut browser = Self { driver, base, session: String::new(), http, _profile: profile };
        let v = browser.call(reqwest::Method::POST, "/session", Some(caps)).await;
        browser.session = v["sessionId"].as_str().expect("a session").to_string();
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| format!("webdriver {url}: {e}"))?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("webdriver {url}: {status} {v}"));
        }
        Ok(v["value"].clone())
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, &self.at("/url"), Some(json!({"url": url}))).await;
    }

    /// The page's current URL.
    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, &self.at("/url"), None).await.as_str().unwrap_or_default().to_string()
    }

    /// The element `css` selects (panics if there is none).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(reqwest::Method::POST, &self.at("/element"), Some(json!({"using": "css selector", "value": css})))
            .await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    /// How many elements `css` selects.
    pub async fn count(&self, css: &str) -> usize {
        let v = self
            .call(reqwest::Method::POST, &self.at("/elements"), Some(json!({"using": "css selector", "value": css})))
            .await;
        v.as_array().map_or(0, Vec::len)
    }

    /// The rendered text of the element `css` selects, waiting up to 10 s for it to appear
    /// (a click that submits a form returns before the next page is there).
    pub async fn text(&self, css: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        while self.count(css).await == 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let id = self.find(css).await;
        let v = self.call(reqwest::Method::GET, &self.at(&format!("/element/{id}/text")), None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits up to 10 s for the element `css` selects to read `want` (after a click that
    /// loads a new page with the same element); panics with what it read otherwise.
    pub async fn await_text(&self, css: &str, want: &str) {
        let end = Instant::now() + Duration::from_secs(10);
        let mut seen = String::new();
        while Instant::now() < end {
            // the page may change under us: a vanished or stale element is just "not yet"
            let found = self
                .try_call(
                    reqwest::Method::POST,
                    &self.at("/element"),
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = found.ok().and_then(|v| v[ELEMENT].as_str().map(str::to_string)) {
                if let Ok(v) = self.try_call(reqwest::Method::GET, &self.at(&format!("/element/{id}/text")), None).await
                {
                    seen = v.as_str().unwrap_or_default().to_string();
                    if seen == want {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} reads {seen:?}, not {want:?}");
    }

    /// Types into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &self.at(&format!("/element/{id}/value")), Some(json!({"text": text}))).await;
    }

    /// Clicks the element `css` selects (a real click: a form button submits its form).
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &self.at(&format!("/element/{id}/click")), Some(json!({}))).await;
    }
}

impl Browser {
    /// Sets a form field's value directly (date inputs take typed keys in a locale's format).
    pub async fn set_value(&self, css: &str, value: &str) {
        let script = "document.querySelector(arguments[0]).value = arguments[1];";
        self.call(
            reqwest::Method::POST,
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": [css, value]})),
        )
        .await;
    }

    /// Saves a PNG of the page as it is now under `target/screenshots/<name>.png` (made for
    /// the README and for a look after a failed run); returns the path.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).expect("base64 PNG");
        let dir = crate::bin_dir().parent().expect("target").join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session (chromium exits), then the driver.
    pub async fn quit(self) {
        let path = format!("/session/{}", self.session);
        let _ = self.http.delete(format!("{}{path}", self.base)).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Reloads `url` until the element `css` holds `text` (projections trail the ledger by a
/// moment).
pub async fn until_listed(browser: &Browser, url: &str, css: &str, text: &str) {
    for _ in 0..100 {
        browser.goto(url).await;
        if browser.count(css).await > 0 && browser.text(css).await.contains(text) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url}: {css} never showed {text}");
}

/// Signs `login` in through the sign-in page (password [`crate::PASSWORD`]).
pub async fn sign_in(browser: &Browser, base: &str, login: &str) {
    browser.goto(&format!("{base}/login")).await;
    browser.type_into("input[name=\"login\"]", login).await;
    browser.type_into("input[name=\"password\"]", crate::PASSWORD).await;
    browser.click("button[name=\"sign_in\"]").await;
    let end = Instant::now() + Duration::from_secs(10);
    while browser.count("#user").await == 0 {
        assert!(Instant::now() < end, "{login} could not sign in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Signs out through the header's button.
pub async fn sign_out(browser: &Browser) {
    browser.click("button[name=\"logout\"]").await;
    browser.await_text("h1", "工作人员登录").await;
}
