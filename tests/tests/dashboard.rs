//! The dashboard of `fleet head --dashboard ADDR`, seen through a real browser: a head process
//! with two `fleet node --join` processes and a running job, and headless Chromium loading the
//! page. After the page's script ran, the DOM shows both nodes, the job (id, name, RUNNING, a
//! progress count, an SVG chart) and the nodes' join events; the page polled more than once
//! without a reload, and a later load shows more progress. `/api/state` is JSON with the job
//! in it and `/metrics` on the same port parses as Prometheus text. A screenshot is kept in
//! `target/test-artifacts/dashboard.png`.
//!
//! Chromium is required (CI installs it, `.ci/run`): without it the test fails and says how to
//! install it, instead of passing without having looked.

use fleet_tests::head_proc::{HeadProc, HeadSpec};
use fleet_tests::jobs_cli::{run, submit, text};
use fleet_tests::{wait_until, ChildGuard, TestHttp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one browser run may take before it is killed.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);

/// The page's virtual time per load: about eight polls of one second.
const VIRTUAL_TIME_MS: u32 = 8000;

/// The browser: `FLEET_CHROMIUM`, or `chromium` / `chromium-browser` / `google-chrome` on
/// PATH. Panics with how to install it when there is none.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEET_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "the dashboard test needs headless Chromium and found none on PATH: run \
         `apt-get install -y chromium` (CI's .ci/run installs it), or set FLEET_CHROMIUM to a \
         Chromium or Chrome binary"
    );
}

/// Where test artifacts go: `$CARGO_TARGET_DIR/test-artifacts`, or the workspace's
/// `target/test-artifacts`.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Loads `url` in headless Chromium with `extra` arguments, lets the page run for
/// [`VIRTUAL_TIME_MS`] of virtual time, and returns what it printed on stdout. The browser is
/// killed (its process group) if it takes longer than [`BROWSER_DEADLINE`].
async fn browse(url: &str, work: &Path, extra: &[String]) -> String {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let profile = work.join(format!("chromium-profile-{n}"));
    let out_path = work.join(format!("chromium-{n}.out"));
    let err_path = work.join(format!("chromium-{n}.err"));
    let out = std::fs::File::create(&out_path).unwrap();
    let err = std::fs::File::create(&err_path).unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
    .args(extra)
    .arg(url)
    .env("HOME", work)
    .stdout(out)
    .stderr(err);
    let mut browser = ChildGuard::spawn("chromium", &mut cmd).unwrap_or_else(|e| {
        panic!(
            "starting {}: {e}; install it with `apt-get install -y chromium`",
            chromium().display()
        )
    });
    let status = wait_until("the browser to finish", BROWSER_DEADLINE, || {
        let s = browser.try_wait();
        async move { s }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e} (it is killed); its stderr:\n{}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    });
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        status.success(),
        "chromium exited with {status}; its stderr:\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    std::fs::read_to_string(&out_path).unwrap_or_default()
}

/// The page's DOM after its script ran.
async fn dump_dom(url: &str, work: &Path) -> String {
    let dom = browse(url, work, &["--dump-dom".to_string()]).await;
    assert!(
        dom.contains("</html>"),
        "the browser printed no DOM:\n{dom}"
    );
    dom
}

/// The opening tag (`<tag ...>`) that contains `needle`.
fn tag_with<'a>(dom: &'a str, needle: &str) -> &'a str {
    let at = dom
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap_or(0);
    let end = at + dom[at..].find('>').unwrap_or(dom.len() - at);
    &dom[start..=end.min(dom.len() - 1)]
}

/// The value of attribute `name` in `tag`.
fn attr(tag: &str, name: &str) -> String {
    let key = format!(" {name}=\"");
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    tag[at..].split('"').next().unwrap_or("").to_string()
}

/// The element that starts at the opening tag containing `needle`, up to `close`.
fn element<'a>(dom: &'a str, needle: &str, close: &str) -> &'a str {
    let tag = tag_with(dom, needle);
    let start = dom.find(tag).unwrap_or(0);
    let end = start + dom[start..].find(close).unwrap_or(dom.len() - start);
    &dom[start..end]
}

/// Every `<tr ...>...</tr>` whose opening tag contains `needle`.
fn rows<'a>(dom: &'a str, needle: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find(needle) {
        let start = rest[..at].rfind("<tr").unwrap_or(at);
        let end = at + rest[at..].find("</tr>").unwrap_or(rest.len() - at);
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

async fn api_state(http: &TestHttp, base: &str) -> Value {
    let r = http.get(&format!("{base}/api/state")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json.is_object(),
        "/api/state is not a JSON object: {}",
        r.text
    );
    r.json
}

fn job<'a>(state: &'a Value, id: &str) -> Option<&'a Value> {
    state["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["id"].as_str() == Some(id))
}

fn accepted(job: &Value) -> u64 {
    job["progress"]["accepted"].as_u64().unwrap_or(0)
}

/// Polls `/api/state` (every 200 ms, up to `within`) until `done` holds for the job.
async fn wait_job(
    http: &TestHttp,
    base: &str,
    id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let s = api_state(http, base).await;
        if let Some(j) = job(&s, id).filter(|j| done(j)) {
            return j.clone();
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}; last /api/state: {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn scrape(body: &str) -> prometheus_parse::Scrape {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text")
}

fn gauge(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match x.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_nodes_a_running_job_its_chart_and_events_and_updates_itself() {
    let browser = chromium(); // fails first, and clearly, without a browser
    let mut head = HeadProc::start(HeadSpec::new().arg("--dashboard").arg("127.0.0.1:0"))
        .await
        .unwrap();
    for n in ["n1", "n2"] {
        head.spawn_node(n).unwrap();
    }
    for n in ["n1", "n2"] {
        head.wait_joined(n, Duration::from_secs(60)).await.unwrap();
    }
    let base = head.dashboard_url(Duration::from_secs(10)).await.unwrap();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(
        !base.ends_with(":0"),
        "the real port is printed, not 0: {base}"
    );
    let http = TestHttp::new();

    // The metrics on the dashboard's port parse, and count both nodes.
    wait_until(
        "/metrics to count two alive nodes",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let url = format!("{base}/metrics");
            async move {
                let r = http.get(&url).await;
                assert_eq!(r.status, 200, "{}", r.text);
                let s = scrape(&r.text);
                assert!(
                    gauge(&s, "fleet_build_info", &[]).is_some(),
                    "no fleet_build_info in:\n{}",
                    r.text
                );
                let alive = gauge(&s, "fleet_nodes", &[("state", "alive")]);
                if alive != Some(2.0) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (alive == Some(2.0)).then_some(())
            }
        },
    )
    .await
    .unwrap();

    // A job long enough to be running while the browser looks.
    let id = submit(&head, "dash-demo", 200_000);

    // Running, with episodes accepted and a few points on its curve (a version every 32).
    let j = wait_job(
        &http,
        &base,
        &id,
        Duration::from_secs(120),
        "the job to run with three points on its curve",
        |j| j["series"].as_array().map_or(0, Vec::len) >= 3,
    )
    .await;
    assert_eq!(j["name"], "dash-demo", "{j:#}");
    assert_eq!(j["state"], "RUNNING", "{j:#}");
    assert_eq!(j["progress"]["total"], 200000, "{j:#}");
    let state = api_state(&http, &base).await;
    let nodes: Vec<&str> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "alive")
        .filter_map(|n| n["node"].as_str())
        .collect();
    for n in ["n1#", "n2#"] {
        assert!(
            nodes.iter().any(|x| x.starts_with(n)),
            "{n} alive: {state:#}"
        );
    }
    let role = format!("rollout-{id}");
    assert!(
        state["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["role"] == role.as_str()),
        "the job's workers are listed: {state:#}"
    );
    let kinds: Vec<&str> = state["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"node_joined"), "{state:#}");
    assert!(kinds.contains(&"job_submitted"), "{state:#}");

    // What the browser shows after the page's script ran for a while.
    let work = head.dir().join("browser");
    std::fs::create_dir_all(&work).unwrap();
    let page = format!("{base}/");
    let dom = dump_dom(&page, &work).await;
    let polls: u64 = attr(tag_with(&dom, "<body"), "data-polls").parse().unwrap();
    assert!(
        polls >= 2,
        "the page polled /api/state and redrew itself more than once in one load: {polls}"
    );
    assert!(
        tag_with(&dom, "id=\"banner\"").contains("hidden"),
        "no error banner: {}",
        element(&dom, "id=\"banner\"", "</div>")
    );
    for n in ["n1#", "n2#"] {
        let row = tag_with(&dom, &format!("data-node=\"{n}"));
        assert_eq!(attr(row, "data-state"), "alive", "{row}");
    }
    let card = element(&dom, &format!("data-job-id=\"{id}\""), "</article>");
    let card_tag = tag_with(card, "data-job-id");
    assert_eq!(attr(card_tag, "data-state"), "RUNNING", "{card}");
    assert!(card.contains(">dash-demo<"), "the job's name: {card}");
    assert!(card.contains(&format!(">{id}<")), "the job's id: {card}");
    assert!(card.contains(">RUNNING<"), "the job's state: {card}");
    let shown: u64 = attr(card_tag, "data-accepted").parse().unwrap();
    assert!(shown > 0, "the page shows episodes accepted: {card}");
    assert!(card.contains("episodes/s"), "the job's rate: {card}");
    let chart = element(card, "<svg class=\"chart\"", "</svg>");
    assert!(
        chart.contains("<polyline class=\"reward\""),
        "the chart draws the mean reward: {chart}"
    );
    assert!(
        chart.contains("<polyline class=\"version\""),
        "the chart draws the policy version: {chart}"
    );
    let joined = rows(&dom, "data-kind=\"node_joined\"");
    for n in ["n1#", "n2#"] {
        assert!(
            joined.iter().any(|r| r.contains(n)),
            "an event of {n} joining: {joined:?}"
        );
    }
    assert!(
        !rows(&dom, "data-kind=\"job_submitted\"").is_empty(),
        "an event of the job's submission"
    );
    assert!(
        dom.contains(&format!(">{}<", state["cluster_id"].as_str().unwrap())),
        "the cluster id"
    );

    // Later, the page shows more: it reads live data, not a page baked at start.
    wait_job(
        &http,
        &base,
        &id,
        Duration::from_secs(60),
        "more episodes accepted than the page showed",
        |j| accepted(j) > shown,
    )
    .await;
    let dom2 = dump_dom(&page, &work).await;
    let card2 = tag_with(&dom2, &format!("data-job-id=\"{id}\""));
    let shown2: u64 = attr(card2, "data-accepted").parse().unwrap();
    assert!(
        shown2 > shown,
        "the second load shows more progress ({shown2}) than the first ({shown})"
    );

    // The screenshot, kept as an artifact.
    let png = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &page,
        &work,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,900".to_string(),
            "--hide-scrollbars".to_string(),
        ],
    )
    .await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "{} is a PNG ({} bytes)",
        png.display(),
        bytes.len()
    );
    eprintln!(
        "dashboard screenshot ({}): {}",
        browser.display(),
        png.display()
    );

    // Stop the job; the page's data says so.
    let o = run(head.client(&["job", "stop", &id, "--now"]));
    assert!(o.status.success(), "fleet job stop failed: {}", text(&o));
    let j = wait_job(
        &http,
        &base,
        &id,
        Duration::from_secs(60),
        "the job to stop",
        |j| j["state"] == "STOPPED",
    )
    .await;
    assert!(j["ended_unix_ms"].is_u64(), "{j:#}");
    wait_until("a job_ended event", Duration::from_secs(10), || {
        let fut = api_state(&http, &base);
        async move {
            let s = fut.await;
            let hit = s["events"].as_array().is_some_and(|es| {
                es.iter()
                    .any(|e| e["kind"] == "job_ended" && e["detail"] == "STOPPED")
            });
            if !hit {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            hit.then_some(())
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_on_a_public_address_warns_that_it_has_no_authentication_and_is_read_only() {
    let head = HeadProc::start(HeadSpec::new().arg("--dashboard").arg("0.0.0.0:0"))
        .await
        .unwrap();
    let base = head.dashboard_url(Duration::from_secs(10)).await.unwrap();
    let port = base.rsplit(':').next().unwrap().to_string();
    let base = format!("http://127.0.0.1:{port}");
    wait_until("the warning on stderr", Duration::from_secs(10), || {
        let hit = head.stderr().contains("has no authentication");
        async move { hit.then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; stderr:\n{}", head.stderr()));

    let http = TestHttp::new();
    let page = http.get(&format!("{base}/")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    for asset in ["/page.js", "/page.css"] {
        let r = http.get(&format!("{base}{asset}")).await;
        assert_eq!(r.status, 200, "{asset}");
        assert!(!r.text.is_empty(), "{asset}");
    }
    let missing = http.get(&format!("{base}/nope")).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json["error"].is_string(), "{}", missing.text);
    let post = http
        .post(&format!("{base}/api/state"), None, &serde_json::json!({}))
        .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    let state = api_state(&http, &base).await;
    assert!(state["status_error"].is_null(), "{state:#}");
    assert_eq!(state["jobs"], serde_json::json!([]));
}
