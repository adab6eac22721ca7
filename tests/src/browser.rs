//! Headless Chromium for the operator's console's browser test: loads a page, lets its scripts
//! run for a budget of virtual time, and returns the DOM they left and every message they
//! wrote to the browser's console. Chromium is Debian's `chromium` package (scripts/test
//! installs it when run as root); `MPS_CHROMIUM` names another binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one page load may take in real time before the browser is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// What a page left after its scripts ran.
#[derive(Debug)]
pub struct LoadedPage {
    /// The serialized DOM (`--dump-dom`).
    pub dom: String,
    /// The page's console messages and uncaught errors, one per line as Chromium logs them.
    pub console: Vec<String>,
}

impl LoadedPage {
    /// The text of the element whose id is `id` (its first text node), None without it.
    pub fn text_of(&self, id: &str) -> Option<String> {
        let start = self.dom.find(&format!(" id=\"{id}\""))?;
        let after_tag = start + self.dom[start..].find('>')? + 1;
        let end = after_tag + self.dom[after_tag..].find('<')?;
        Some(unescape(&self.dom[after_tag..end]))
    }

    /// The value of attribute `name` of the `<body>` element.
    pub fn body_attribute(&self, name: &str) -> Option<String> {
        let body = self.dom.find("<body")?;
        let end = body + self.dom[body..].find('>')?;
        let tag = &self.dom[body..end];
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let close = start + tag[start..].find('"')?;
        Some(unescape(&tag[start..close]))
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

/// The Chromium binary: `MPS_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
/// Panics with what to install when there is none: the browser test never passes without one.
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("MPS_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for directory in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = directory.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "headless Chromium is needed for the operator's console's browser test and none was found: install \
         Debian's package with `sudo apt-get install chromium` (scripts/test does it when run as root), or set \
         MPS_CHROMIUM to a Chromium binary"
    );
}

/// Loads `url` in headless Chromium, lets the page's timers and fetches run for
/// `virtual_time` of virtual time, and returns the DOM and console messages.
pub async fn load(url: &str, virtual_time: Duration) -> LoadedPage {
    let browser = chromium();
    let profile = tempfile::tempdir().unwrap();
    let url = url.to_owned();
    let out = tokio::task::spawn_blocking(move || run(&browser, &profile, &url, virtual_time)).await.unwrap();
    let console = out.1.lines().filter(|line| line.contains(":CONSOLE")).map(str::to_owned).collect();
    LoadedPage { dom: out.0, console }
}

fn run(browser: &PathBuf, profile: &tempfile::TempDir, url: &str, virtual_time: Duration) -> (String, String) {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            // Tests often run as root in containers, where Chromium's sandbox cannot start; the
            // page is our own, on loopback.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", virtual_time.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    // Read both pipes on threads of their own so that neither fills up and blocks the browser.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let dom = std::thread::spawn(move || read_all(&mut stdout));
    let log = std::thread::spawn(move || read_all(&mut stderr));
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not finish loading {url} within {BROWSER_TIMEOUT:?}", browser.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (dom, log) = (dom.join().unwrap(), log.join().unwrap());
    assert!(status.success(), "{} failed on {url} ({status}):\n{log}", browser.display());
    (dom, log)
}

fn read_all(reader: &mut impl std::io::Read) -> String {
    let mut bytes = Vec::new();
    let _ = reader.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}
