//! A rollout job: N episodes of an agent on R rollout workers, from a TOML file (`fleet run`)
//! or built in (`fleet demo`), appended to a JSONL file as they complete, with a summary. How
//! it runs is [`super::run`]: an asynchronous loop in which a (simulated) trainer moves the
//! policy version every `batch_size` accepted episodes while admission goes on under the
//! staleness bound.
//!
//! Every key, with its default:
//!
//! ```toml
//! episodes = 64            # how many episodes in all (rounded up to whole groups)
//! group_size = 1           # episodes per task (GRPO groups), recorded with group_id and sample
//! batch_size = 32          # accepted episodes per trainer step (= per policy version)
//! max_staleness = 1        # versions an admitted episode's policy may lag the trainer's
//! max_concurrent = 16      # episodes at once, all workers together
//! max_attempts = 4         # dispatches of one episode (re-queues after infrastructure failures)
//! episode_timeout = "120s" # the agent's deadline per episode
//! discount = 1.0           # turn discount at export
//! output = "trajectories.jsonl"   # relative to the current directory
//! min_accepted = 0.5       # exit non-zero if fewer than this share of episodes is accepted
//! interrupt_grace = "30s"  # after Ctrl-C/SIGTERM, how long episodes in flight may finish
//! role = "rollout"         # the role name of the rollout workers
//!
//! [trainer]                # the simulated trainer (until a real one is attached)
//! step_time = "0s"         # time one optimizer step takes
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
//! ready_timeout = "120s"   # how long the backend may take to answer (a real model: "10m");
//!                          # applies to `url` too
//!
//! [inference]              # optional: a pool of inference servers instead of [backend]; each
//!                          # worker's proxy routes over the servers on its node (sticky,
//!                          # least in flight, health-aware)
//! servers = 4
//! command = ["fleet", "mock-llm", "--port", "{port}"]
//! api = "sglang"           # their weight API: "sglang" (also fleet mock-llm) or "vllm"
//! ready_path = "/health"
//! ready_timeout = "120s"
//! max_restarts = 5         # a server that exits is restarted, then loaded at the current version
//! cpu = 0.0                # per server
//! gpu = 0
//!
//! [weights]                # optional, needs [inference]: real weights move at every version
//! update = "rolling"       # or "stop_the_world"
//! k = 1                    # rolling: servers updated at a time
//! size = "8MiB"            # the simulated trainer's weights file per version
//! drain_timeout = "30s"    # how long in-flight requests may finish before a server loads
//! load_timeout = "10m"     # how long one server may take to load
//! dir = "fleet-weights"    # where the weights files go (relative to the current directory)
//!
//! [agent]                  # one of:
//! builtin = "multi-turn"
//! # command = ["{python}", "agents/openai_agent.py"]   # cwd: the job file's directory
//! # env = { KEY = "value" }
//! # cwd = "."              # default: the job file's directory
//!
//! [tasks]                  # one of:
//! prompt = "Plan a trip."  # N copies of {"id": i, "prompt": ..., "turns": ...}
//! turns = 3
//! # file = "tasks.jsonl"   # one task (any JSON) per line, cycled
//! # generate = "reverse"   # verifiable problems {"id", "task", "prompt": "abc=", "answer": "cba"}
//! # seed = 1               # (or "add"); for the built-in `answer` agent
//! ```
//!
//! With `[trainer] kind = "grpo"` the trainer is real: the tiny policy of `fleet-policy`
//! trained with GRPO on an RpcServer worker (see [`super::grpo`]); its keys are `model`,
//! `init_seed` (7), `warmup_steps` (40), `lr` (1e-3) and `temperature` (1.0), and it needs
//! `[inference]` servers running `fleet infer --model {model}` and `[weights]`. `run_dir`
//! (none by default) receives `metrics.jsonl` and `reward.svg`.
//!
//! In commands, `fleet` is this executable, `{port}` the worker's port, `{index}` the worker's
//! index and `{python}` is `$FLEET_PYTHON` or `python3`.

use super::controller::RolloutConfig;
use crate::duration::parse_duration;
use fleet_actors::{AgentSpec, Backend, HttpServiceSpec, RolloutSpec, WorkerKind};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use super::run::JobReport;

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
fn one() -> u32 {
    1
}
fn default_min_accepted() -> f64 {
    0.5
}
fn default_attempts() -> u32 {
    4
}
fn default_grace() -> String {
    "30s".into()
}

/// The `[trainer]` table: the simulated trainer that moves the policy version.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrainerSection {
    /// `"simulated"` (default: sleeps `step_time`, writes `[weights] size` bytes) or `"grpo"`
    /// (trains the tiny policy, see [`super::grpo`]).
    pub kind: Option<String>,
    /// The simulated trainer: time one optimizer step takes (`"0s"` by default).
    pub step_time: Option<String>,
    /// GRPO: the model directory (created from `init_seed` if missing; default
    /// `<run_dir>/model`, else `fleet-model`; relative to the current directory).
    pub model: Option<PathBuf>,
    /// GRPO: the seed of the model's initial weights (default 7).
    pub init_seed: Option<u64>,
    /// GRPO: supervised warm-up steps on generated examples before RL (default 40).
    pub warmup_steps: Option<u64>,
    /// GRPO: AdamW's learning rate (default 1e-3).
    pub lr: Option<f64>,
    /// GRPO: the servers' sampling temperature, which the trainer must know (default 1.0).
    pub temperature: Option<f64>,
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

/// The `[inference]` table: a pool of inference servers the rollout workers route over.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSection {
    /// How many servers.
    #[serde(default = "four")]
    pub servers: u32,
    /// Their command (`{port}` is each server's port).
    pub command: Option<Vec<String>>,
    /// Their weight API: `sglang` (also `fleet mock-llm`) or `vllm`.
    pub api: Option<String>,
    /// Readiness path (default `/health`).
    pub ready_path: Option<String>,
    /// Readiness deadline (default `120s`).
    pub ready_timeout: Option<String>,
    /// Restarts of a server that exits (default 5).
    pub max_restarts: Option<u32>,
    /// CPU per server.
    #[serde(default)]
    pub cpu: f64,
    /// GPUs per server.
    #[serde(default)]
    pub gpu: u32,
}

fn four() -> u32 {
    4
}

/// The `[weights]` table: how weights move at every version.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WeightsSection {
    /// `rolling` (default) or `stop_the_world`.
    pub update: Option<String>,
    /// Rolling: servers at a time (default 1).
    pub k: Option<usize>,
    /// Bytes per version (`8MiB` by default).
    pub size: Option<String>,
    /// How long in-flight requests may finish before a server loads (default `30s`).
    pub drain_timeout: Option<String>,
    /// How long one server may take to load (default `10m`).
    pub load_timeout: Option<String>,
    /// The weights directory (default `fleet-weights`).
    pub dir: Option<PathBuf>,
}

/// `8MiB`, `1GiB`, `512KiB`, `1000` (bytes), `4MB` (10^6).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (use e.g. 8MiB, 1GiB, 1000)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
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
    /// Generated verifiable problems: `"reverse"` or `"add"` (`{"id", "task", "prompt",
    /// "answer"}`), for the built-in `answer` agent.
    pub generate: Option<String>,
    /// The generator's seed (default 1).
    pub seed: Option<u64>,
}

/// A rollout job.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutJob {
    /// Episodes to run.
    #[serde(default = "default_episodes")]
    pub episodes: u64,
    /// Episodes per task (a GRPO group).
    #[serde(default = "one")]
    pub group_size: u32,
    /// Dispatches of one episode at most.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The share of episodes that must be accepted for a zero exit code.
    #[serde(default = "default_min_accepted")]
    pub min_accepted: f64,
    /// After an interrupt, how long episodes in flight may finish.
    #[serde(default = "default_grace")]
    pub interrupt_grace: String,
    /// The simulated trainer.
    #[serde(default)]
    pub trainer: TrainerSection,
    /// Accepted episodes per trainer step (per policy version).
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
    /// The run directory: `metrics.jsonl` (one line per version), `reward.svg`, and the GRPO
    /// trainer's model (none by default; relative to the current directory).
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// The role name of the rollout workers.
    #[serde(default = "default_role")]
    pub role: String,
    /// Workers.
    #[serde(default)]
    pub workers: WorkersSection,
    /// Backend.
    #[serde(default)]
    pub backend: BackendSection,
    /// A pool of inference servers (instead of one backend per worker).
    #[serde(default)]
    pub inference: Option<InferenceSection>,
    /// Weight updates over the pool.
    #[serde(default)]
    pub weights: Option<WeightsSection>,
    /// Agent.
    #[serde(default)]
    pub agent: AgentSection,
    /// Tasks.
    #[serde(default)]
    pub tasks: TasksSection,
    /// The run this job is (`<name>-<id>` of a job submitted to a head; not a job-file key):
    /// its workers get it as `FLEET_JOB`, and each node writes their logs to
    /// `<runs dir>/<run_name>/logs/`.
    #[serde(skip)]
    pub run_name: Option<String>,
}

fn default_role() -> String {
    "rollout".into()
}

impl RolloutJob {
    /// The scheduling spec every worker of this job starts from: `FLEET_JOB` set to its run.
    pub fn base_spec(&self) -> fleet_actors::SchedulingSpec {
        let spec = fleet_actors::SchedulingSpec::default();
        match &self.run_name {
            Some(run) => spec.env("FLEET_JOB", run),
            None => spec,
        }
    }

    /// The built-in demo: 2 workers with a `fleet mock-llm` backend each, 64 episodes of the
    /// `multi-turn` agent, a version every 32 accepted.
    pub fn demo() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("the empty job parses"))
    }

    /// Reads a job file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::from_text(&text, &path.display().to_string(), base)
    }

    /// Parses a job file's text; `source` names it in errors and `base` is its directory, the
    /// base of its relative input paths (`[tasks] file`, `[agent] cwd`).
    pub fn from_text(text: &str, source: &str, base: &Path) -> Result<Self, String> {
        let mut job: RolloutJob = toml::from_str(text).map_err(|e| format!("{source}: {e}"))?;
        if let Some(f) = &job.tasks.file {
            if f.is_relative() {
                job.tasks.file = Some(base.join(f));
            }
        }
        match &job.agent.cwd {
            None => job.agent.cwd = Some(base.to_string_lossy().into_owned()),
            Some(c) if Path::new(c).is_relative() => {
                job.agent.cwd = Some(base.join(c).to_string_lossy().into_owned())
            }
            Some(_) => {}
        }
        Ok(job)
    }

    /// Puts the job's outputs under `dir`, the run directory of a job submitted to a head: `dir`
    /// takes the place of `run_dir`, a path under the job file's `run_dir` keeps its place under
    /// `dir`, and other relative `output`, `[trainer] model` and `[weights] dir` are taken
    /// relative to `dir`.
    pub fn place_outputs(&mut self, dir: &Path) {
        let old_run = self.run_dir.take();
        let under = |p: &Path| {
            if let Some(rest) = old_run.as_deref().and_then(|r| p.strip_prefix(r).ok()) {
                dir.join(rest)
            } else if p.is_relative() {
                dir.join(p)
            } else {
                p.to_path_buf()
            }
        };
        self.output = under(&self.output);
        if let Some(m) = &self.trainer.model {
            self.trainer.model = Some(under(m));
        }
        if let Some(w) = self.weights.as_mut() {
            if let Some(d) = &w.dir {
                w.dir = Some(under(d));
            }
        }
        self.run_dir = Some(dir.to_path_buf());
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

    /// The inference pool and weight plans (`[inference]`, `[weights]`), if the job has them.
    pub fn pool_plan(
        &self,
        fleet: &str,
    ) -> Result<
        Option<(
            super::updates::PoolPlan,
            Option<super::updates::WeightsPlan>,
        )>,
        String,
    > {
        use crate::weights::coordinator::Timeouts;
        use crate::weights::UpdateMode;
        let Some(inf) = &self.inference else {
            if self.weights.is_some() {
                return Err(
                    "[weights] needs an [inference] pool: weights move to its servers".into(),
                );
            }
            return Ok(None);
        };
        if self.backend.command.is_some() || self.backend.url.is_some() {
            return Err(
                "give [inference] (a pool of servers) or [backend] (one per worker), not both"
                    .into(),
            );
        }
        if inf.servers == 0 {
            return Err("[inference] servers must be at least 1".into());
        }
        let ready_timeout = parse_duration(inf.ready_timeout.as_deref().unwrap_or("120s"))
            .map_err(|e| format!("[inference] ready_timeout: {e}"))?;
        let argv = inf.command.clone().unwrap_or_else(|| {
            ["fleet", "mock-llm", "--port", "{port}"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        if argv.is_empty() {
            return Err("[inference] command is empty".into());
        }
        let api: crate::weights::WeightApi = inf
            .api
            .as_deref()
            .unwrap_or("sglang")
            .parse()
            .map_err(|e| format!("[inference] api: {e}"))?;
        let grpo = self.grpo_plan()?;
        let argv: Vec<String> = match &grpo {
            Some(g) => argv.iter().map(|a| g.fill(a)).collect(),
            None => argv,
        };
        let mut spec = HttpServiceSpec::new(Self::expand(&argv, fleet))
            .ready_when(
                inf.ready_path.clone().unwrap_or_else(|| "/health".into()),
                200,
            )
            .ready_within(ready_timeout);
        spec.restart = fleet_actors::RestartPolicy::OnFailure {
            max_restarts: inf.max_restarts.unwrap_or(5),
            backoff_ms: 200,
        };
        let pool = super::updates::PoolPlan {
            role: format!("{}-inference", self.role),
            servers: inf.servers,
            spec,
            cpu: inf.cpu,
            gpu: inf.gpu,
            api,
        };
        let weights = match &self.weights {
            None => None,
            Some(w) => {
                let mode = match w.update.as_deref().unwrap_or("rolling") {
                    "rolling" => UpdateMode::Rolling {
                        k: w.k.unwrap_or(1),
                    },
                    "stop_the_world" | "stop-the-world" => UpdateMode::StopTheWorld,
                    other => {
                        return Err(format!(
                            "[weights] update = {other:?}: use \"rolling\" or \"stop_the_world\""
                        ))
                    }
                };
                if w.k == Some(0) {
                    return Err("[weights] k must be at least 1".into());
                }
                let d = |v: &Option<String>, dflt: &str, key: &str| {
                    parse_duration(v.as_deref().unwrap_or(dflt))
                        .map_err(|e| format!("[weights] {key}: {e}"))
                };
                let dir = w.dir.clone().unwrap_or_else(|| match &self.run_dir {
                    Some(d) => d.join("weights"),
                    None => PathBuf::from("fleet-weights"),
                });
                let dir = if dir.is_relative() {
                    std::env::current_dir().map(|c| c.join(&dir)).unwrap_or(dir)
                } else {
                    dir
                };
                Some(super::updates::WeightsPlan {
                    role: format!("{}-trainer", self.role),
                    mode,
                    size: parse_bytes(w.size.as_deref().unwrap_or("8MiB"))
                        .map_err(|e| format!("[weights] size: {e}"))?,
                    dir,
                    timeouts: Timeouts {
                        drain: d(&w.drain_timeout, "30s", "drain_timeout")?,
                        load: d(&w.load_timeout, "10m", "load_timeout")?,
                        control: Duration::from_secs(10),
                    },
                    grpo,
                })
            }
        };
        Ok(Some((pool, weights)))
    }

    /// The tasks: `episodes / group_size` of them (rounded up); each runs `group_size` times.
    pub fn tasks(&self) -> Result<Vec<Value>, String> {
        if self.group_size == 0 {
            return Err("group_size must be at least 1".into());
        }
        let n = self.episodes.div_ceil(self.group_size as u64) as usize;
        if let Some(kind) = &self.tasks.generate {
            if self.tasks.file.is_some() || self.tasks.prompt.is_some() {
                return Err("[tasks]: give `generate`, `file` or `prompt`, one of them".into());
            }
            let task: fleet_policy::task::Task =
                kind.parse().map_err(|e| format!("[tasks] generate: {e}"))?;
            let mut rng = fleet_policy::sample::SplitMix::new(self.tasks.seed.unwrap_or(1));
            return Ok((0..n)
                .map(|i| {
                    let p = task.problem(&mut rng);
                    json!({"id": i, "task": kind, "prompt": p.prompt, "answer": p.answer})
                })
                .collect());
        }
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
            max_attempts: self.max_attempts.max(1),
        })
    }

    /// The simulated trainer's step time.
    pub fn trainer_step_time(&self) -> Result<Duration, String> {
        parse_duration(self.trainer.step_time.as_deref().unwrap_or("0s"))
            .map_err(|e| format!("[trainer] step_time: {e}"))
    }

    /// How long episodes in flight may finish after an interrupt.
    pub fn interrupt_grace(&self) -> Result<Duration, String> {
        parse_duration(&self.interrupt_grace).map_err(|e| format!("interrupt_grace: {e}"))
    }

    /// How long the backend may take to become ready (`[backend] ready_timeout`).
    pub fn ready_timeout(&self) -> Result<Duration, String> {
        parse_duration(self.backend.ready_timeout.as_deref().unwrap_or("120s"))
            .map_err(|e| format!("[backend] ready_timeout: {e}"))
    }

    /// Checks the job's keys (durations, tasks, shares) without looking for programs (for a
    /// cluster, where the agent runs on other machines).
    pub fn preflight_keys(&self) -> Result<(), String> {
        self.worker_kind("fleet")?;
        self.tasks()?;
        self.config()?;
        self.trainer_step_time()?;
        self.grpo_plan()?;
        self.interrupt_grace()?;
        self.pool_plan("fleet")?;
        if !(0.0..=1.0).contains(&self.min_accepted) {
            return Err(format!(
                "min_accepted = {} must be between 0 and 1 (a share of the episodes)",
                self.min_accepted
            ));
        }
        Ok(())
    }

    /// Checks what can be checked before anything starts: every duration and key, the tasks,
    /// `min_accepted`, and that the agent command's program exists (on `PATH`, or as a path
    /// relative to the agent's working directory). `fleet` is the fleet executable.
    pub fn preflight(&self, fleet: &str) -> Result<(), String> {
        self.preflight_keys()?;
        if let Some(argv) = &self.agent.command {
            let argv = Self::expand(argv, fleet);
            let prog = argv.first().map(String::as_str).unwrap_or("");
            let cwd = Path::new(self.agent.cwd.as_deref().unwrap_or("."));
            if !program_exists(prog, cwd) {
                return Err(format!(
                    "[agent] command: cannot find the program {prog:?} (looked {}); install it, fix the path, or set FLEET_PYTHON for {{python}}",
                    if prog.contains('/') {
                        format!("at {}", cwd.join(prog).display())
                    } else {
                        "on PATH".to_string()
                    }
                ));
            }
        }
        Ok(())
    }
}

/// Whether `prog` names an executable file: a path (relative to `cwd`) or a name on `PATH`.
fn program_exists(prog: &str, cwd: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.is_empty() {
        return false;
    }
    if prog.contains('/') {
        return is_exe(&cwd.join(prog));
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|d| is_exe(&d.join(prog))))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submitted_jobs_outputs_go_into_its_run_directory_and_its_inputs_stay_by_the_job_file() {
        let text = r#"
            run_dir = "fleet-runs/x"
            output = "fleet-runs/x/trajectories.jsonl"
            [tasks]
            file = "tasks.jsonl"
            [trainer]
            model = "models/m"
        "#;
        let mut job = RolloutJob::from_text(text, "job.toml", Path::new("/src/jobs")).unwrap();
        assert_eq!(job.tasks.file, Some(PathBuf::from("/src/jobs/tasks.jsonl")));
        assert_eq!(job.agent.cwd.as_deref(), Some("/src/jobs"));
        job.place_outputs(Path::new("/runs/x-1"));
        assert_eq!(job.output, PathBuf::from("/runs/x-1/trajectories.jsonl"));
        assert_eq!(job.run_dir, Some(PathBuf::from("/runs/x-1")));
        assert_eq!(job.trainer.model, Some(PathBuf::from("/runs/x-1/models/m")));
        let mut plain =
            RolloutJob::from_text("output = \"/abs/out.jsonl\"", "j", Path::new("/s")).unwrap();
        plain.place_outputs(Path::new("/runs/y-2"));
        assert_eq!(plain.output, PathBuf::from("/abs/out.jsonl"));
        assert_eq!(plain.run_dir, Some(PathBuf::from("/runs/y-2")));
    }
}
