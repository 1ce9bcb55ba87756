//! A `fleet head` in a process of its own, for tests that measure the head itself: its memory
//! (`VmRSS`/`VmHWM` from `/proc/PID/status`), the size of what it logs, how it behaves with
//! a low file-descriptor limit (set in the child before `exec`), its jobs and its dashboard
//! (off unless the test passes `--dashboard ADDR`). Nodes are real
//! `fleet node --join` processes; everything started is killed (process group) on drop.
//!
//! [`crate::cluster::TestCluster`] embeds the head in the test process, which is what most
//! tests want; this one is for tests where the head's own process is what is measured.

use crate::cluster::TestTls;
use crate::process::{fleet_bin, ChildGuard};
use crate::wait::wait_until;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How to start the head.
#[derive(Debug, Default, Clone)]
pub struct HeadSpec {
    args: Vec<String>,
    nofile: Option<u64>,
    tls: bool,
    env: Vec<(String, String)>,
    no_cookie: bool,
    runs_dir: Option<PathBuf>,
    cookie: Option<String>,
}

impl HeadSpec {
    /// A head on 127.0.0.1, a free port, a test cookie, no TLS.
    pub fn new() -> Self {
        HeadSpec::default()
    }
    /// An extra argument for `fleet head`.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    /// RLIMIT_NOFILE (soft and hard) of the head process.
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }
    /// TLS between all processes, with certificates generated for the test.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
    /// An environment variable for the head and its nodes.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// The head's `--runs-dir` (default: `runs/` in the head's own test directory), e.g. to
    /// start a second head on the runs of a first.
    pub fn runs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runs_dir = Some(dir.into());
        self
    }
    /// The cookie (default: one made up for this head).
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }
    /// Pass no cookie at all (no FLEET_COOKIE), so the loopback default applies.
    pub fn without_cookie(mut self) -> Self {
        self.no_cookie = true;
        self
    }
}

/// A running `fleet head` process and the nodes started against it.
#[derive(Debug)]
pub struct HeadProc {
    head: ChildGuard,
    nodes: Vec<ChildGuard>,
    addr: String,
    dir: PathBuf,
    cookie: Option<String>,
    tls: Option<TestTls>,
    env: Vec<(String, String)>,
}

static HEADS: AtomicU64 = AtomicU64::new(0);

/// Memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// Resident set now, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
}

fn common_env(cmd: &mut Command, cookie: Option<&str>, env: &[(String, String)]) {
    cmd.env_remove("FLEET_COOKIE")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("CUDA_VISIBLE_DEVICES", "");
    if let Some(c) = cookie {
        cmd.env("FLEET_COOKIE", c);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}

fn tls_args(cmd: &mut Command, tls: Option<&TestTls>) {
    if let Some(t) = tls {
        cmd.arg("--tls-cert")
            .arg(&t.files.cert)
            .arg("--tls-key")
            .arg(&t.files.key)
            .arg("--tls-ca")
            .arg(&t.files.ca);
    }
}

fn files(dir: &Path, name: &str) -> Result<(std::fs::File, std::fs::File), String> {
    let open = |p: PathBuf| {
        std::fs::File::create(&p).map_err(|e| format!("creating {}: {e}", p.display()))
    };
    Ok((
        open(dir.join(format!("{name}.out")))?,
        open(dir.join(format!("{name}.err")))?,
    ))
}

impl HeadProc {
    /// Starts the head and waits (up to 30 s) for its `listening on` line.
    pub async fn start(spec: HeadSpec) -> Result<HeadProc, String> {
        let n = HEADS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("fleet-headproc-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let tls = if spec.tls {
            Some(TestTls::generate(&dir)?)
        } else {
            None
        };
        let cookie = (!spec.no_cookie).then(|| {
            spec.cookie
                .clone()
                .unwrap_or_else(|| format!("head-proc-{}-{n}", std::process::id()))
        });
        let (out, err) = files(&dir, "head")?;
        let mut cmd = Command::new(fleet_bin());
        cmd.args(["head", "--listen", "127.0.0.1:0", "--no-workers"])
            .arg("--runs-dir")
            .arg(spec.runs_dir.clone().unwrap_or_else(|| dir.join("runs")));
        // Heads of tests that run at once would race for the dashboard's default port.
        if !spec.args.iter().any(|a| a.starts_with("--dashboard")) {
            cmd.arg("--no-dashboard");
        }
        cmd.args(&spec.args).stdout(out).stderr(err);
        common_env(&mut cmd, cookie.as_deref(), &spec.env);
        tls_args(&mut cmd, tls.as_ref());
        if let Some(limit) = spec.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let head =
            ChildGuard::spawn("head", &mut cmd).map_err(|e| format!("starting fleet head: {e}"))?;
        let mut me = HeadProc {
            head,
            nodes: vec![],
            addr: String::new(),
            dir,
            cookie,
            tls,
            env: spec.env,
        };
        me.addr = wait_until("the head's listening line", Duration::from_secs(30), || {
            let a = me.stdout().lines().find_map(|l| {
                l.split_once("fleet head listening on ")
                    .map(|(_, a)| a.trim().to_string())
            });
            async move { a }
        })
        .await
        .map_err(|e| format!("{e}; head stderr:\n{}", me.stderr()))?;
        Ok(me)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The cookie the head and its nodes were given in FLEET_COOKIE (none: the loopback
    /// default), e.g. for a [`fleet_runtime::Cluster::connect`] from the test process.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// The dashboard's `http://IP:PORT` from the head's `dashboard at` line (started with
    /// `--dashboard ADDR`), waiting up to `deadline` for it.
    pub async fn dashboard_url(&self, deadline: Duration) -> Result<String, String> {
        wait_until("the head's dashboard line", deadline, || {
            let url = self.stdout().lines().find_map(|l| {
                l.strip_prefix("dashboard at ")
                    .map(|u| u.trim().trim_end_matches('/').to_string())
            });
            async move { url }
        })
        .await
        .map_err(|e| format!("{e}; head stdout:\n{}", self.stdout()))
    }

    /// The head's pid.
    pub fn pid(&self) -> u32 {
        self.head.pid()
    }

    /// What the head printed on stdout (its address, joins, refusals).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("head.out")).unwrap_or_default()
    }

    /// What the head logged (stderr).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("head.err")).unwrap_or_default()
    }

    /// Bytes the head has logged so far.
    pub fn stderr_len(&self) -> u64 {
        std::fs::metadata(self.dir.join("head.err"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The head's memory now.
    pub fn memory(&self) -> Result<Memory, String> {
        let p = format!("/proc/{}/status", self.pid());
        let s = std::fs::read_to_string(&p).map_err(|e| format!("reading {p}: {e}"))?;
        let field = |k: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .ok_or_else(|| format!("no {k} in {p}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// Open file descriptors of the head now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Starts `fleet node --join` against the head with the head's cookie and certificates.
    pub fn spawn_node(&mut self, name: &str) -> Result<(), String> {
        let cookie = self.cookie.clone();
        self.spawn_node_with_cookie(name, cookie.as_deref())
    }

    /// Starts `fleet node --join` with `cookie` in FLEET_COOKIE (none: the loopback default).
    pub fn spawn_node_with_cookie(
        &mut self,
        name: &str,
        cookie: Option<&str>,
    ) -> Result<(), String> {
        let (out, err) = files(&self.dir, name)?;
        let mut cmd = Command::new(fleet_bin());
        cmd.args(["node", "--join", &self.addr, "--name", name, "--cpus", "1"])
            .args(["--mem-mib", "1024", "--port-range", "27000-27049"])
            .arg("--runs-dir")
            .arg(self.dir.join("node-runs").join(name))
            .stdout(out)
            .stderr(err);
        common_env(&mut cmd, cookie, &self.env);
        tls_args(&mut cmd, self.tls.as_ref());
        let child =
            ChildGuard::spawn(name, &mut cmd).map_err(|e| format!("starting fleet node: {e}"))?;
        self.nodes.push(child);
        Ok(())
    }

    /// Everything node `name` printed.
    pub fn node_log(&self, name: &str) -> String {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir.join(format!("{name}.{ext}"))).unwrap_or_default()
        };
        format!("{}{}", read("out"), read("err"))
    }

    /// Waits until the head printed that node `name` joined.
    pub async fn wait_joined(&self, name: &str, deadline: Duration) -> Result<(), String> {
        let want = format!("node {name}#");
        wait_until(&format!("{name} to join"), deadline, || {
            let hit = self
                .stdout()
                .lines()
                .any(|l| l.starts_with(&want) && l.contains(" joined"));
            async move { hit.then_some(()) }
        })
        .await
        .map_err(|e| {
            format!(
                "{e}\n{name}'s log:\n{}\nhead stdout:\n{}",
                self.node_log(name),
                self.stdout()
            )
        })
    }

    /// The directory with the logs (and certificates); the head's run directories are under
    /// `runs/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends `signal` to the head process alone (its nodes are processes of their own).
    pub fn signal_head(&self, signal: i32) {
        // SAFETY: a signal to the head process this test started.
        unsafe { libc::kill(self.head.pid() as i32, signal) };
    }

    /// The head's exit status, once it has exited.
    pub fn head_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.head.try_wait()
    }

    /// The pids of the node processes started so far.
    pub fn node_pids(&self) -> Vec<u32> {
        self.nodes.iter().map(ChildGuard::pid).collect()
    }

    /// A `fleet` client command (`submit`, `job ...`, `run --head`, `status`) aimed at this head
    /// (FLEET_HEAD) with its cookie and certificates; `args` are the subcommand and its own
    /// arguments, the TLS flags go after them.
    pub fn client(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(fleet_bin());
        cmd.args(args).env("FLEET_HEAD", &self.addr);
        common_env(&mut cmd, self.cookie.as_deref(), &self.env);
        cmd.env("RUST_LOG", "warn");
        tls_args(&mut cmd, self.tls.as_ref());
        cmd
    }
}

impl Drop for HeadProc {
    fn drop(&mut self) {
        self.nodes.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
