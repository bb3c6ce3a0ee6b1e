//! The first run, as a newcomer meets it: `hydra up` says where to go; the
//! setup link makes the first administrator in a real browser; the
//! README's commands, run as written, build a jobset; a fresh Nix store
//! substitutes the output through the server with `require-sigs`; the
//! binary cache is signed without configuration; and the documented API
//! examples work against a real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Banner, Up, curl, doc_commands, hydra, run_script};
use hydra_test_support::{Browser, GitRepo, shared_tempdir};

const PASSWORD: &str = "correct horse";

/// Makes the first administrator through the setup link over HTTP, as
/// the form would post it.
fn make_admin_over_http(banner: &Banner, user: &str) {
    let link = banner.setup.as_deref().expect("a setup link");
    let token = link.split_once("token=").unwrap().1;
    let base = banner.open.trim_end_matches('/');
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Origin: {base}"),
        "--data-urlencode",
        &format!("token={token}"),
        "--data-urlencode",
        &format!("username={user}"),
        "--data-urlencode",
        &format!("password={PASSWORD}"),
        "--data-urlencode",
        &format!("password2={PASSWORD}"),
        &format!("{base}/setup"),
    ]);
    assert_eq!(status, 302, "{body}");
}

/// Runs the commands of a document's section as written, as `alice`
/// against the server at `base`, in a fresh directory; its stdout and
/// stderr. A failure shows the script, its output and hydra's log.
fn run_documented(file: &str, heading: &str, base: &str, up: &Up) -> (String, String) {
    let work = shared_tempdir();
    let script = doc_commands(file, heading);
    let (ok, stdout, stderr) = run_script(
        &script,
        work.path(),
        &[
            ("HYDRA", base),
            ("HYDRA_USER", "alice"),
            ("HYDRA_PASSWORD", PASSWORD),
        ],
    );
    assert!(
        ok,
        "the commands of {file} failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- hydra\n{}",
        up.seen.join("\n")
    );
    (stdout, stderr)
}

#[tokio::test]
async fn a_new_user_follows_the_readme_to_an_admin_a_built_jobset_and_a_signed_substitution() {
    let data = shared_tempdir();
    let mut up = Up::start(hydra(data.path()));
    let banner = Banner::of(&up);
    let base = banner.open.trim_end_matches('/').to_string();
    assert!(banner.open.starts_with("http://127.0.0.1:"), "{banner:?}");

    // Step 1, in a real browser: the setup link, the form, signed in.
    let setup = banner.setup.clone().expect("no administrator yet: a link");
    let browser = Browser::start();
    browser.goto(&setup);
    assert!(
        browser.text().contains("Create the first administrator"),
        "{}",
        browser.source()
    );
    browser.fill("#username", "alice");
    browser.fill("#fullname", "Alice Admin");
    browser.fill("#password", PASSWORD);
    browser.fill("#password2", PASSWORD);
    browser.click_and_follow("button[type=submit]");
    assert_eq!(
        browser.url(),
        banner.open,
        "the front page after signing in"
    );
    assert!(browser.cookie("hydra_session").is_some(), "signed in");
    browser.goto(&format!("{base}/current-user"));
    let page = browser.text();
    assert!(page.contains("alice") && page.contains("admin"), "{page}");
    // The link is spent.
    browser.goto(&setup);
    assert!(
        browser.text().contains("already has an administrator"),
        "{}",
        browser.text()
    );
    drop(browser);

    // Steps 2 to 6: the README's commands, as written.
    let (stdout, stderr) = run_documented("README.md", "## First run", &base, &up);
    assert!(stdout.contains("\"buildstatus\": 0"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("Hello from hydra"),
        "the fresh store has the output:\n{stdout}\n{stderr}"
    );
    // What was substituted was checked against the server's key.
    let (_, key) = curl(&[&format!("{base}/nix-cache-public-key")]);
    assert_eq!(Some(key.trim()), banner.public_key.as_deref());

    // The log tells the story a user follows, one line per event.
    for line in [
        "hello:main: evaluation 1: 1 new builds",
        "build 1 succeeded: hello:main:hello",
    ] {
        assert!(
            up.saw(line, Duration::from_secs(10)),
            "`{line}` not in the log:\n{}",
            up.seen.join("\n")
        );
    }
    assert!(
        !up.seen.iter().any(|l| l.contains("request method=")),
        "web requests are logged at debug only"
    );

    // Step 7, in the browser again: what was built, page by page, and a
    // second project made with the pages' own forms.
    browse_the_pages(&base, data.path());
    up.stop();
}

/// Waits, up to 30 seconds, until the page shows `needle`.
fn wait_for_text(browser: &Browser, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !browser.text().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "`{needle}` not on the page:\n{}",
            browser.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Signs in as alice and walks from the front page to the build's log by
/// clicking; creates a project and a jobset with the forms and watches,
/// on the open jobset page, its evaluations and builds arrive; opens the
/// failed build, its log and a line's permalink, restarts the build with
/// its button and signs out; no page writes an error to the console.
fn browse_the_pages(base: &str, data: &std::path::Path) {
    let browser = Browser::start();
    let mut shots = Shots::new();
    browser.goto(&format!("{base}/login?next=/project/hello"));
    browser.fill("#username", "alice");
    browser.fill("#password", PASSWORD);
    let at = browser.click_and_follow("main button[type=submit]");
    assert_eq!(
        at,
        format!("{base}/project/hello"),
        "back where the sign-in was asked"
    );
    let at = browser.click_and_follow("a.row-link[href='/jobset/hello/main']");
    assert_eq!(at, format!("{base}/jobset/hello/main"));
    let page = browser.text();
    assert!(
        page.contains("Last checked") && page.contains("no errors"),
        "{page}"
    );
    let at = browser.click_and_follow("table.evals a.row-link");
    assert!(at.starts_with(&format!("{base}/eval/")), "{at}");
    assert!(
        browser.text().contains("New Jobs (1)"),
        "{}",
        browser.text()
    );
    let build_url = browser.click_and_follow("table.builds a.row-link");
    assert!(
        build_url.starts_with(&format!("{base}/build/")),
        "{build_url}"
    );
    let page = browser.text();
    assert!(
        page.contains("Success") && page.contains("Restart"),
        "{page}"
    );

    // The log viewer: numbered lines, and find in them. (The output may
    // have been in the store already, leaving no log: give it one.)
    let (_, json) = curl(&["-H", "Accept: application/json", &build_url]);
    let build: serde_json::Value = serde_json::from_str(&json).unwrap();
    let log = hydra_config::DataDir::from(data).build_log(build["drvpath"].as_str().unwrap());
    if !log.exists() {
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "building\n\u{1b}[32mhello\u{1b}[0m from the log\n").unwrap();
    }
    browser.goto(&format!("{build_url}/log"));
    let lines = browser.execute("return document.querySelectorAll('ol.log li').length");
    assert!(lines.as_u64().unwrap_or(0) > 0, "{}", browser.source());
    browser.fill(".find-text", "hello");
    let found = browser.execute("return document.querySelectorAll('ol.log li.found').length");
    assert!(found.as_u64().unwrap_or(0) > 0, "{}", browser.source());

    // A live page: the build restarted from elsewhere, the page follows
    // without reloading.
    browser.goto(&build_url);
    browser.execute("window.stayed = true; document.querySelector('main h1').dataset.old = '1';");
    browser.execute(
        "fetch(location.pathname + '/restart', {method: 'POST', headers: {Accept: 'application/json'}})",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while browser.execute("return document.querySelector('main h1').dataset.old === '1'")
        == serde_json::json!(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the page did not follow the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        browser.execute("return window.stayed === true"),
        serde_json::json!(true),
        "not reloaded"
    );
    // Without errors in the console (the pages' script, the CSP).
    let errors = browser.execute(
        "return performance.getEntriesByType('resource').filter(r => r.responseStatus >= 400).map(r => r.name)",
    );
    assert_eq!(errors, serde_json::json!([]), "failed requests");

    // Pages left behind give their live connection back: browsers open
    // only six per server, so the seventh page would wait for one.
    for _ in 0..2 {
        for path in [
            "/",
            "/queue",
            "/status",
            "/all",
            "/steps",
            "/evals",
            "/queue-summary",
        ] {
            let started = std::time::Instant::now();
            browser.goto(&format!("{base}{path}"));
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{path} waited {:?} for a connection",
                started.elapsed()
            );
        }
    }

    assert_no_console_errors(&browser, "the pages walked so far");

    // A project and a jobset through the forms; a mistake first.
    browser.goto(&format!("{base}/create-project"));
    browser.fill("#name", "second");
    // Past the browser's own check of the required field, to the server's.
    browser.execute("document.querySelector('form.settings').noValidate = true");
    browser.click("main button[type=submit]");
    wait_for_text(&browser, "The display name is required.");
    // The refusal's status is the one thing the console reports.
    let errors = browser.console_errors();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/create-project") && e.contains("400")),
        "{errors:#?}"
    );
    browser.fill("#displayname", "Second");
    let at = browser.click_and_follow("main button[type=submit]");
    assert_eq!(at, format!("{base}/project/second"));
    let at = browser.click_and_follow("a[href='/project/second/create-jobset']");
    assert_eq!(at, format!("{base}/project/second/create-jobset"));
    let source = GitRepo::new();
    source.commit(&[("release.nix", &jobs(false))], "fine");
    browser.fill("#name", "main");
    browser.fill("#nixexprinput", "src");
    browser.fill("input[name='input-0-name']", "src");
    browser.fill("input[name='input-0-value']", &source.url());
    browser.execute("window.scrollTo(0, 0)");
    shots.take(&browser, "jobset-form");
    let at = browser.click_and_follow("main button[type=submit]");
    assert_eq!(at, format!("{base}/jobset/second/main"));
    assert_no_console_errors(&browser, &at);

    // The open jobset page shows its evaluations as they come, without a
    // reload: the first, then one asked for after the source changed.
    browser.execute("window.stayed = true");
    let evals = "return document.querySelectorAll('table.evals a.row-link').length";
    wait_until(&browser, "the first evaluation on the open page", || {
        browser.execute(evals).as_u64().unwrap_or(0) >= 1
    });
    source.commit(&[("release.nix", &jobs(true))], "broken");
    browser.execute(
        "fetch(location.pathname + '/evaluate', {method: 'POST', headers: {Accept: 'application/json'}})",
    );
    wait_until(&browser, "the second evaluation on the open page", || {
        browser.execute(evals).as_u64().unwrap_or(0) >= 2
    });
    // Its builds finish, and the page's counts follow: one failed.
    wait_until(
        &browser,
        "the failed build counted on the open page",
        || {
            browser.execute(
            "const bad = document.querySelector('table.evals tbody tr .badge.bad'); return bad ? bad.textContent.trim() : ''",
        ) == serde_json::json!("1")
        },
    );
    assert_eq!(
        browser.execute("return window.stayed === true"),
        serde_json::json!(true),
        "not reloaded"
    );
    assert_no_console_errors(&browser, &at);
    shots.take(&browser, "jobset");

    // What blocks the most: the broken job's own failure, with its log and
    // the evaluation it first failed in, the commit that came with it.
    browser.goto(&format!("{at}/blockers"));
    let page = browser.text();
    assert!(
        page.contains("What blocks the most in jobset second:main"),
        "{page}"
    );
    assert_eq!(
        browser.execute(
            "return [...document.querySelectorAll('table.blockers tbody tr')].map(tr => tr.cells[1].innerText)"
        ),
        serde_json::json!(["broken"]),
        "{page}"
    );
    assert_eq!(
        browser.execute(
            "return !!document.querySelector('table.blockers a[href*=\"/nixlog/\"]') && document.querySelector('table.blockers td:nth-child(4)').innerText.includes('src →')"
        ),
        serde_json::json!(true),
        "{page}"
    );
    assert_no_console_errors(&browser, "the blockers");
    // The commits between the last good and the first bad evaluation.
    browser.click_and_follow("table.blockers a[href^='/api/scmdiff']");
    let commits = browser.text();
    assert!(
        commits.contains("broken") && commits.contains("exit 1"),
        "the commit and its diff: {commits}"
    );
    // A text page has no icon: the browser's request for one is all the
    // console reports.
    let errors = browser.console_errors();
    assert!(
        errors.iter().all(|e| e.contains("/favicon.ico")),
        "{errors:#?}"
    );
    browser.goto(&at);

    // The failed build, its log, a line's permalink.
    let eval_url = browser.click_and_follow("table.evals a.row-link");
    // What the evaluation cost: each top-level attribute, and the
    // jobset's two evaluations side by side.
    browser.click_and_follow("a[href$='/cost']");
    assert_eq!(
        browser.execute(
            "return [...document.querySelectorAll('table.eval-cost tbody td:first-child')].map(td => td.innerText).sort()"
        ),
        serde_json::json!(["broken", "fine"]),
        "{}",
        browser.text()
    );
    assert_eq!(
        browser
            .execute("return document.querySelectorAll('table.eval-cost-trend tbody tr').length"),
        serde_json::json!(2)
    );
    assert_no_console_errors(&browser, "the evaluation's cost");
    browser.goto(&eval_url);
    shots.take(&browser, "evaluation");
    browser.execute(
        "[...document.querySelectorAll('table.builds tr')].find(tr => tr.innerText.includes('broken')).querySelector('a.row-link').dataset.pick = 'yes'",
    );
    let failed = browser.click_and_follow("table.builds a.row-link[data-pick='yes']");
    let page = browser.text();
    assert!(page.contains("Failed"), "{page}");
    assert_no_console_errors(&browser, &failed);
    shots.take(&browser, "build");
    // The tabs answer the arrow keys.
    browser.fill("nav.tabs a[href='#tabs-summary']", "\u{E014}");
    assert_eq!(
        browser.execute("return [location.hash, document.activeElement.getAttribute('href'), document.getElementById('tabs-summary').hidden]"),
        serde_json::json!(["#tabs-details", "#tabs-details", true]),
        "ArrowRight goes to the next tab"
    );
    browser.fill("nav.tabs a[href='#tabs-details']", "\u{E012}");
    assert_eq!(
        browser.execute("return location.hash"),
        serde_json::json!("#tabs-summary"),
        "ArrowLeft comes back"
    );
    browser.click_and_follow("a[href$='/log']");
    let page = browser.text();
    assert!(page.contains("something went wrong"), "{page}");
    let at = browser.click_and_follow("ol.log li#L2 a.ln");
    assert!(at.ends_with("#L2"), "{at}");
    assert_eq!(
        browser.execute(
            "return document.querySelector(':target') && document.querySelector(':target').id"
        ),
        serde_json::json!("L2"),
        "the permalink's line is the target"
    );
    assert_no_console_errors(&browser, &at);
    shots.take(&browser, "log");

    // Restarted by the administrator with the build page's button.
    browser.goto(&failed);
    let at = browser.click_and_follow("form[action$='/restart'] button");
    assert_eq!(at, failed, "back on the build");
    assert!(
        browser.text().contains("1 build has been restarted."),
        "the page says what was done"
    );
    // Built again: a second step, shown by the page as it happens.
    wait_until(&browser, "the restarted build's second step", || {
        browser
            .execute("return document.querySelectorAll('table.steps tbody tr').length")
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    assert_no_console_errors(&browser, &at);

    // Its steps as a graph: the failed step, linked to its log; the open
    // page follows a restart from elsewhere without reloading.
    browser.goto(&format!("{failed}/graph"));
    let failed_node = "return [...document.querySelectorAll('svg.dep-graph a')].map(a => [a.getAttribute('href').replace(/.*\\/nixlog\\//, ''), a.querySelector('g').getAttribute('class')])";
    assert_eq!(
        browser.execute(failed_node),
        serde_json::json!([["2", "node state-failed critical"]]),
        "{}",
        browser.source()
    );
    assert_eq!(
        browser.execute(
            "return document.querySelector('.critical-path').innerText.includes('broken')"
        ),
        serde_json::json!(true)
    );
    // Zoomed with the button: the view box shrinks around the centre.
    let view = "return document.querySelector('svg.dep-graph').getAttribute('viewBox')";
    let before = browser.execute(view);
    browser.click("button[data-zoom='in']");
    assert_ne!(browser.execute(view), before, "zoomed");
    browser.execute("window.stayed = true");
    browser.execute(
        "fetch(location.pathname.replace(/graph$/, 'restart'), {method: 'POST', headers: {Accept: 'application/json'}})",
    );
    wait_until(&browser, "the graph following the third step", || {
        browser.execute(failed_node) == serde_json::json!([["3", "node state-failed critical"]])
    });
    assert_eq!(
        browser.execute("return window.stayed === true"),
        serde_json::json!(true),
        "not reloaded"
    );
    assert_no_console_errors(&browser, "the graph");
    // The blockers follow too: the failure's log link moves to the
    // newest step.
    browser.goto(&format!("{base}/jobset/second/main/blockers"));
    let log_link = "const a = document.querySelector('table.blockers a[href*=\"/nixlog/\"]'); return a ? a.getAttribute('href').replace(/.*\\/nixlog\\//, '') : ''";
    assert_eq!(browser.execute(log_link), serde_json::json!("3"));
    browser.execute("window.stayed = true");
    browser.execute(&format!(
        "fetch('{}/restart', {{method: 'POST', headers: {{Accept: 'application/json'}}}})",
        failed.trim_start_matches(base)
    ));
    wait_until(&browser, "the blockers following the fourth step", || {
        browser.execute(log_link) == serde_json::json!("4")
    });
    assert_eq!(
        browser.execute("return window.stayed === true"),
        serde_json::json!(true),
        "not reloaded"
    );
    assert_no_console_errors(&browser, "the blockers, live");

    // Signed out with the menu's button.
    browser.click_and_follow("form[action='/logout'] button");
    assert!(browser.cookie("hydra_session").is_none(), "signed out");
    let page = browser.text();
    assert!(
        page.contains("Sign in") && !page.contains("Sign out"),
        "{page}"
    );
    assert!(page.contains("You are signed out."), "{page}");
    assert_no_console_errors(&browser, &browser.url());
    browser.goto(&format!("{base}/jobset/second/main#tabs-configuration"));
    let page = browser.text();
    assert!(page.contains(&source.url()), "{page}");

    // The dark theme, as the toggle sets it.
    browser.goto(&format!("{base}/jobset/second/main"));
    browser.execute("document.documentElement.dataset.theme = 'dark'");
    shots.take(&browser, "jobset-dark");
    shots.check();
}

/// The README's screenshots, taken on the walk: into the directory named
/// by `HYDRA_SCREENSHOTS` (`scripts/screenshots` sets it to
/// `docs/screenshots`), else into a temporary one; each is checked to be
/// a PNG of the window's size.
struct Shots {
    dir: std::path::PathBuf,
    _temp: Option<tempfile::TempDir>,
    taken: Vec<std::path::PathBuf>,
}

impl Shots {
    fn new() -> Shots {
        match std::env::var_os("HYDRA_SCREENSHOTS") {
            Some(dir) => Shots {
                dir: dir.into(),
                _temp: None,
                taken: Vec::new(),
            },
            None => {
                let temp = shared_tempdir();
                Shots {
                    dir: temp.path().to_path_buf(),
                    _temp: Some(temp),
                    taken: Vec::new(),
                }
            }
        }
    }

    fn take(&mut self, browser: &Browser, name: &str) {
        // Relative times and the live refresh settle first.
        std::thread::sleep(Duration::from_millis(300));
        let path = self.dir.join(format!("{name}.png"));
        browser.screenshot(&path);
        self.taken.push(path);
    }

    /// Each file is a PNG 1280 pixels wide (the window).
    fn check(&self) {
        assert_eq!(self.taken.len(), 6);
        for path in &self.taken {
            let png = std::fs::read(path).unwrap();
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", path.display());
            let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
            assert_eq!(width, 1280, "{}", path.display());
        }
    }
}

/// The second jobset's expression: a job that succeeds, and with `broken`
/// one that fails after writing a few lines.
fn jobs(broken: bool) -> String {
    let job = |name: &str, script: &str| {
        format!(
            "  {name} = derivation {{ name = \"{name}\"; system = builtins.currentSystem; \
             builder = \"/bin/sh\"; args = [ \"-c\" \"{script}\" ]; }};\n"
        )
    };
    let mut text = String::from("{ ... }:\n{\n");
    text += &job("fine", "echo fine > $out");
    if broken {
        text += &job(
            "broken",
            "echo step one; echo step two; echo something went wrong >&2; exit 1",
        );
    }
    text + "}\n"
}

/// Fails with what the console said, if a page wrote an error to it.
fn assert_no_console_errors(browser: &Browser, at: &str) {
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors on {at}: {errors:#?}");
}

/// Waits, up to 60 seconds, until `done` holds; fails naming `what`.
fn wait_until(browser: &Browser, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited a minute for {what}:\n{}",
            browser.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn the_setup_link_works_only_with_its_token_and_only_once() {
    let data = shared_tempdir();
    let up = Up::start(hydra(data.path()));
    let banner = Banner::of(&up);
    let base = banner.open.trim_end_matches('/').to_string();
    let link = banner.setup.clone().unwrap();

    let (status, body) = curl(&[&link]);
    assert_eq!(status, 200);
    assert!(body.contains("name=\"password2\""), "{body}");
    for wrong in [format!("{base}/setup"), format!("{base}/setup?token=0000")] {
        let (status, body) = curl(&[&wrong]);
        assert_eq!(status, 403, "{wrong}: {body}");
    }
    // Mistakes come back on the form, with what was typed.
    let token = link.split_once("token=").unwrap().1;
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Origin: {base}"),
        "-d",
        &format!("token={token}&username=bob&password=one+thing&password2=another"),
        &format!("{base}/setup"),
    ]);
    assert_eq!(status, 400);
    assert!(
        body.contains("did not match") && body.contains("value=\"bob\""),
        "{body}"
    );
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Origin: {base}"),
        "-d",
        &format!("token={token}&username=Not+Valid&password=secret1&password2=secret1"),
        &format!("{base}/setup"),
    ]);
    assert_eq!(status, 400);
    assert!(body.contains("not a valid user name"), "{body}");

    make_admin_over_http(&banner, "bob");
    let (status, _) = curl(&[&link]);
    assert_eq!(status, 410, "spent once an administrator exists");
    // Signing in works with what was chosen.
    let (status, body) = curl(&[
        "-H",
        &format!("Referer: {base}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        &format!("{{\"username\": \"bob\", \"password\": \"{PASSWORD}\"}}"),
        &format!("{base}/login"),
    ]);
    assert_eq!(status, 302, "{body}");
    assert!(body.contains("\"admin\""), "{body}");
    up.stop();

    // The next start has an administrator: no link, where to sign in.
    let up = Up::start(hydra(data.path()));
    let banner = Banner::of(&up);
    assert!(banner.setup.is_none() && banner.sign_in, "{:#?}", up.seen);
    up.stop();
}

#[tokio::test]
async fn the_binary_cache_is_signed_out_of_the_box_and_a_configured_key_wins() {
    let data = shared_tempdir();
    let up = Up::start(hydra(data.path()));
    let banner = Banner::of(&up);
    let secret = data.path().join("keys/binary-cache.secret");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is the owner's only");
    let public = std::fs::read_to_string(data.path().join("keys/binary-cache.public")).unwrap();
    let (status, served) = curl(&[&format!("{}nix-cache-public-key", banner.open)]);
    assert_eq!(status, 200);
    assert_eq!(served.trim(), public.trim());
    assert_eq!(banner.public_key.as_deref(), Some(public.trim()));
    up.stop();
    // The same key the next time.
    let up = Up::start(hydra(data.path()));
    assert_eq!(Banner::of(&up).public_key.as_deref(), Some(public.trim()));
    up.stop();

    // A configured key wins, and none is generated.
    let data = shared_tempdir();
    let key = hydra_nix::narinfo::SecretKey::generate("configured-1").unwrap();
    let key_file = data.path().join("my.key");
    std::fs::write(&key_file, key.to_text()).unwrap();
    std::fs::write(
        data.path().join("hydra.conf"),
        format!(
            "{}binary_cache_secret_key_file = {}\n",
            common::FREE_PORTS,
            key_file.display()
        ),
    )
    .unwrap();
    let up = Up::start(hydra(data.path()));
    let banner = Banner::of(&up);
    let wanted = key.public_key().to_text();
    assert_eq!(banner.public_key.as_deref(), Some(wanted.as_str()));
    let (_, served) = curl(&[&format!("{}nix-cache-public-key", banner.open)]);
    assert_eq!(served.trim(), wanted);
    assert!(!data.path().join("keys").exists());
    up.stop();
}

#[tokio::test]
async fn the_api_documentation_runs_as_written() {
    let data = shared_tempdir();
    let up = Up::start(hydra(data.path()));
    let banner = Banner::of(&up);
    let base = banner.open.trim_end_matches('/').to_string();
    make_admin_over_http(&banner, "alice");
    let (stdout, _) = run_documented("docs/api.md", "# The JSON API", &base, &up);
    let lines: Vec<&str> = stdout.lines().collect();
    // Sign in, project, jobset, push, build, restart, key: in order.
    assert_eq!(lines[0], "\"alice\"", "{stdout}");
    assert_eq!(lines[1], format!("\"{base}/project/hello\""), "{stdout}");
    assert_eq!(
        lines[2],
        format!("\"{base}/jobset/hello/main\""),
        "{stdout}"
    );
    assert_eq!(lines[3], "[\"hello:main\"]", "{stdout}");
    assert!(
        lines[4].contains("\"job\":\"hello\"") && lines[4].contains("\"buildstatus\":0"),
        "{stdout}"
    );
    assert_eq!(lines[5], "302", "the restart redirects to the build");
    assert_eq!(lines[6], "true", "pull requests are built: {stdout}");
    assert_eq!(Some(lines[7]), banner.public_key.as_deref());
    // The restarted build was taken up again by the queue runner.
    let build: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
    let id = build["id"].as_i64().unwrap();
    let mut up = up;
    let line = format!("build {id} succeeded");
    let finished_again = common::eventually(Duration::from_secs(60), || {
        up.wait_for(&line, Duration::from_millis(200));
        up.seen.iter().filter(|l| l.contains(&line)).count() >= 2
    });
    assert!(finished_again, "{}", up.seen.join("\n"));
    up.stop();
}

/// A command run as the unprivileged `nobody`, with `home` as its home.
fn as_nobody(home: &std::path::Path, path: &str, script: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["bash", "-c", script])
        .current_dir(common::repo_root())
        .env_clear()
        .env("HOME", home)
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn scripts_start_puts_hydra_on_a_users_path_and_the_data_in_their_home() {
    let home = shared_tempdir();
    nix::unistd::chown(
        home.path(),
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    // A copy of the binary that the user may run.
    let binary = home.path().join("hydra-binary");
    std::fs::copy(env!("CARGO_BIN_EXE_hydra"), &binary).unwrap();
    let install = format!(
        ". scripts/lib/install.sh && put_on_path {}",
        binary.display()
    );
    let bin = home.path().join(".local/bin");

    // Not on the PATH yet: it says how to run it.
    let out = as_nobody(home.path(), "/usr/bin:/bin", &install);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "hydra is installed as {0}/hydra; {0} is not on your PATH, so run it as {0}/hydra",
            bin.display()
        )
    );
    // On the PATH: `hydra` works as the README writes it.
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let out = as_nobody(home.path(), &path, &install);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("hydra is installed as {}/hydra", bin.display())
    );
    let out = as_nobody(home.path(), &path, "hydra init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without HYDRA_DATA, a user's data is in their home.
    assert!(
        home.path()
            .join(".local/share/hydra/postgres/data/PG_VERSION")
            .is_file()
    );
}
