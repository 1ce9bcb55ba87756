//! A rollout job: N episodes of an agent on R rollout workers, from a TOML file (`fleet run`)
//! or built in (`fleet demo`), written to a JSONL file with a summary.
//!
//! With no trainer attached, the job plays the trainer's part in the staleness protocol: it runs
//! the episodes one batch at a time and moves the policy version after each batch, so every
//! recorded turn carries the version that produced it.
//!
//! ```toml
//! episodes = 64            # how many
//! batch_size = 32          # episodes per version
//! max_staleness = 1
//! max_concurrent = 16      # episodes at once, all workers together
//! episode_timeout = "60s"
//! discount = 0.9
//! output = "trajectories.jsonl"
//!
//! [workers]
//! replicas = 2
//! cpu = 0.0                # per worker
//! gpu = 0
//! max_concurrent = 8       # episodes at once per worker
//!
//! [backend]                # one of:
//! command = ["fleet", "mock-llm", "--port", "{port}", "--seed", "{index}"]
//! # url = "http://127.0.0.1:8000"
//! ready_path = "/health"
//! ready_timeout = "120s"
//!
//! [agent]                  # one of:
//! builtin = "multi-turn"
//! # command = ["{python}", "agents/openai_agent.py"]   # cwd: the job file's directory
//!
//! [tasks]                  # one of:
//! prompt = "Plan a trip."  # N copies of {"id": i, "prompt": ..., "turns": ...}
//! turns = 3
//! # file = "tasks.jsonl"   # one task (any JSON) per line, cycled
//! ```
//!
//! In commands, `fleet` is this executable, `{port}` the worker's port, `{index}` the worker's
//! index and `{python}` is `$FLEET_PYTHON` or `python3`.

use super::controller::{Episode, RolloutConfig, RolloutController};
use crate::duration::parse_duration;
use crate::scheduler::Scheduler;
use fleet_actors::{
    AgentSpec, Backend, FleetError, HttpServiceSpec, Job, RolloutSpec, SchedulingSpec, WorkerKind,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn default_episodes() -> u64 {
    64
}
fn default_batch() -> u64 {
    32
}
fn default_staleness() -> u64 {
    1
}
fn default_concurrent() -> u64 {
    16
}
fn default_timeout() -> String {
    "120s".into()
}
fn default_discount() -> f64 {
    1.0
}
fn default_output() -> PathBuf {
    PathBuf::from("trajectories.jsonl")
}

/// The `[workers]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSection {
    /// Rollout workers.
    #[serde(default = "two")]
    pub replicas: u32,
    /// CPU cores per worker.
    #[serde(default)]
    pub cpu: f64,
    /// GPUs per worker (exported to the backend as `CUDA_VISIBLE_DEVICES`).
    #[serde(default)]
    pub gpu: u32,
    /// Episodes at once per worker.
    #[serde(default = "eight")]
    pub max_concurrent: usize,
}

fn two() -> u32 {
    2
}
fn eight() -> usize {
    8
}

impl Default for WorkersSection {
    fn default() -> Self {
        WorkersSection {
            replicas: 2,
            cpu: 0.0,
            gpu: 0,
            max_concurrent: 8,
        }
    }
}

/// The `[backend]` table.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// A command started next to each worker.
    pub command: Option<Vec<String>>,
    /// An inference server already running.
    pub url: Option<String>,
    /// Readiness path of the command (default `/health`).
    pub ready_path: Option<String>,
    /// Readiness deadline (default `120s`).
    pub ready_timeout: Option<String>,
}

/// The `[agent]` table.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// A Rust agent registered on the nodes.
    pub builtin: Option<String>,
    /// An external command.
    pub command: Option<Vec<String>>,
    /// Extra environment for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the command (default: the job file's directory).
    pub cwd: Option<String>,
}

/// The `[tasks]` table.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TasksSection {
    /// Generated tasks' prompt.
    pub prompt: Option<String>,
    /// Generated tasks' turns.
    pub turns: Option<u64>,
    /// A JSONL file of tasks, cycled.
    pub file: Option<PathBuf>,
}

/// A rollout job.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutJob {
    /// Episodes to run.
    #[serde(default = "default_episodes")]
    pub episodes: u64,
    /// Episodes per policy version.
    #[serde(default = "default_batch")]
    pub batch_size: u64,
    /// Staleness bound.
    #[serde(default = "default_staleness")]
    pub max_staleness: u64,
    /// Episodes at once over all workers.
    #[serde(default = "default_concurrent")]
    pub max_concurrent: u64,
    /// Agent deadline per episode (`60s`, `500ms`, `2m`).
    #[serde(default = "default_timeout")]
    pub episode_timeout: String,
    /// Turn discount.
    #[serde(default = "default_discount")]
    pub discount: f64,
    /// The JSONL output.
    #[serde(default = "default_output")]
    pub output: PathBuf,
    /// The role name of the rollout workers.
    #[serde(default = "default_role")]
    pub role: String,
    /// Workers.
    #[serde(default)]
    pub workers: WorkersSection,
    /// Backend.
    #[serde(default)]
    pub backend: BackendSection,
    /// Agent.
    #[serde(default)]
    pub agent: AgentSection,
    /// Tasks.
    #[serde(default)]
    pub tasks: TasksSection,
}

fn default_role() -> String {
    "rollout".into()
}

/// The summary of a finished job.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// Every episode, in task order.
    pub episodes: Vec<Episode>,
    /// Wall time.
    pub elapsed: Duration,
    /// Where the trajectories went.
    pub output: PathBuf,
    /// The controller's final statistics.
    pub stats: super::controller::RolloutStats,
}

impl RolloutJob {
    /// The built-in demo: 2 workers with a `fleet mock-llm` backend each, 64 episodes of the
    /// `multi-turn` agent, 32 per version.
    pub fn demo() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("the empty job parses"))
    }

    /// Reads a job file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut job: RolloutJob =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        // Relative paths are relative to the job file.
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Some(f) = &job.tasks.file {
            if f.is_relative() {
                job.tasks.file = Some(base.join(f));
            }
        }
        if job.agent.cwd.is_none() {
            job.agent.cwd = Some(base.to_string_lossy().into_owned());
        }
        Ok(job)
    }

    /// `fleet` as the program is this executable; `{python}` is `$FLEET_PYTHON` or `python3`.
    fn expand(argv: &[String], fleet: &str) -> Vec<String> {
        let python = std::env::var("FLEET_PYTHON").unwrap_or_else(|_| "python3".into());
        argv.iter()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 && a == "fleet" {
                    fleet.to_string()
                } else {
                    a.replace("{python}", &python)
                }
            })
            .collect()
    }

    /// The worker kind the job asks for; `fleet` is the fleet executable. `{index}` in the
    /// backend command is left for the launcher to fill with each worker's index.
    pub fn worker_kind(&self, fleet: &str) -> Result<WorkerKind, String> {
        let agent = match (&self.agent.builtin, &self.agent.command) {
            (Some(_), Some(_)) => {
                return Err("[agent]: give `builtin` or `command`, not both".into())
            }
            (Some(name), None) => AgentSpec::Registered(name.clone()),
            (None, Some(argv)) if !argv.is_empty() => AgentSpec::Command {
                argv: Self::expand(argv, fleet),
                env: self.agent.env.clone(),
                cwd: self.agent.cwd.clone(),
            },
            (None, Some(_)) => return Err("[agent]: the command is empty".into()),
            (None, None) => AgentSpec::Registered("multi-turn".into()),
        };
        let ready_timeout = parse_duration(self.backend.ready_timeout.as_deref().unwrap_or("120s"))
            .map_err(|e| format!("[backend] ready_timeout: {e}"))?;
        let backend = match (&self.backend.command, &self.backend.url) {
            (Some(_), Some(_)) => {
                return Err("[backend]: give `command` or `url`, not both".to_string())
            }
            (None, Some(u)) => Backend::Url(u.clone()),
            (cmd, None) => {
                let argv = cmd.clone().unwrap_or_else(|| {
                    ["fleet", "mock-llm", "--port", "{port}", "--seed", "{index}"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                });
                let path = self
                    .backend
                    .ready_path
                    .clone()
                    .unwrap_or_else(|| "/health".into());
                Backend::Command(
                    HttpServiceSpec::new(Self::expand(&argv, fleet))
                        .ready_when(path, 200)
                        .ready_within(ready_timeout),
                )
            }
        };
        let mut spec = RolloutSpec::new(backend, agent);
        spec.max_concurrent = self.workers.max_concurrent;
        spec.proxy_command = Some(vec![
            fleet.into(),
            "proxy".into(),
            "--backend".into(),
            "{backend}".into(),
            "--port".into(),
            "{port}".into(),
        ]);
        Ok(WorkerKind::Rollout(spec))
    }

    /// The tasks, `episodes` of them.
    pub fn tasks(&self) -> Result<Vec<Value>, String> {
        let n = self.episodes as usize;
        if let Some(f) = &self.tasks.file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("[tasks] file {}: {e}", f.display()))?;
            let lines: Vec<Value> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(k, l)| {
                    serde_json::from_str(l)
                        .map_err(|e| format!("{} line {}: {e}", f.display(), k + 1))
                })
                .collect::<Result<_, _>>()?;
            if lines.is_empty() {
                return Err(format!("[tasks] file {} has no tasks", f.display()));
            }
            return Ok((0..n).map(|i| lines[i % lines.len()].clone()).collect());
        }
        let prompt = self
            .tasks
            .prompt
            .clone()
            .unwrap_or_else(|| "Write a short plan for the task, then refine it.".into());
        let turns = self.tasks.turns.unwrap_or(3);
        Ok((0..n)
            .map(|i| json!({"id": i, "prompt": format!("{prompt} (task {i})"), "turns": turns}))
            .collect())
    }

    /// The controller settings.
    pub fn config(&self) -> Result<RolloutConfig, String> {
        Ok(RolloutConfig {
            batch_size: self.batch_size.max(1),
            max_staleness: self.max_staleness,
            max_concurrent: self.max_concurrent.max(1),
            episode_timeout: parse_duration(&self.episode_timeout)
                .map_err(|e| format!("episode_timeout: {e}"))?,
            discount: self.discount,
            admission_timeout: Duration::from_secs(600),
        })
    }

    /// Creates the rollout workers, runs the episodes batch by batch (moving the version after
    /// each), writes the JSONL output, deletes the workers and reports.
    pub async fn run(
        &self,
        scheduler: &Scheduler,
        fleet: &str,
        progress: impl Fn(&Episode, usize, usize) + Send + Sync + Clone,
    ) -> Result<JobReport, FleetError> {
        let bad = |e: String| FleetError::bad_request("the rollout job", e);
        let kinds = self.worker_kind(fleet).map_err(bad)?;
        let tasks = self.tasks().map_err(bad)?;
        let config = self.config().map_err(bad)?;
        let t = Instant::now();
        let spec = SchedulingSpec::default()
            .cpu(self.workers.cpu)
            .gpu(self.workers.gpu)
            .ports(2);
        let job = Job::new(self.role.clone(), self.workers.replicas)
            .kind(kinds)
            .spec(spec);
        scheduler.create_workers(job).await?;
        let result = async {
            let ctl = RolloutController::new(
                scheduler.clone(),
                &self.role,
                config.clone(),
                Duration::from_secs(180),
            )
            .await?;
            let mut episodes = Vec::new();
            let total = tasks.len();
            let mut version = 0;
            for chunk in tasks.chunks(config.batch_size as usize) {
                let offset = episodes.len();
                let p = progress.clone();
                let batch = ctl
                    .rollout_batch(chunk.to_vec(), move |ep, n, _| p(ep, offset + n, total))
                    .await?;
                episodes.extend(batch);
                if episodes.len() < total {
                    version += 1;
                    ctl.set_version(version).await?;
                }
            }
            Ok::<_, FleetError>((episodes, ctl.stats()))
        }
        .await;
        let deleted = scheduler.delete_workers(Some(&self.role), false).await;
        let (episodes, stats) = result?;
        deleted?;
        write_jsonl(&self.output, &episodes).map_err(|e| {
            FleetError::bad_request(format!("writing {}", self.output.display()), e)
        })?;
        Ok(JobReport {
            episodes,
            elapsed: t.elapsed(),
            output: self.output.clone(),
            stats,
        })
    }
}

/// Writes accepted episodes as JSON lines: one episode per line with its turns.
pub fn write_jsonl(path: &Path, episodes: &[Episode]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let tmp = path.with_extension("jsonl.partial");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for ep in episodes {
        let Some(t) = &ep.trajectory else { continue };
        let line = json!({
            "episode_id": ep.episode_id,
            "task": ep.task,
            "worker": ep.worker,
            "admitted_version": ep.admitted_version,
            "latency_ms": ep.latency_ms,
            "session_id": t.get("session_id"),
            "discount": t.get("discount"),
            "turns": t.get("turns"),
        });
        writeln!(f, "{line}")?;
    }
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
