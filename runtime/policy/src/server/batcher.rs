//! Continuous batching: one model thread steps every active sequence together.
//!
//! Handlers submit a [`Job`] (prompt ids, sampling settings, the weights it starts with, a
//! channel for its tokens) and the thread admits queued jobs between steps, up to
//! `max_batch` at once; each step is one forward pass per (weights, temperature) group over
//! all its sequences, then one sampled token per sequence. A sequence leaves the batch when it
//! samples the end token, reaches `max_tokens`, the context or a stop string, when its client
//! goes away (its channel is closed), or when generation is aborted (`pause_generation` with
//! mode `abort`). Every job's end is counted in `in_flight`, which `pause_generation` waits on.
//!
//! The thread is a plain `std::thread` (the model is synchronous and CPU-bound); it never
//! blocks the tokio runtime, and it ends when every submitter is gone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};

use tokio::sync::{mpsc, watch};

use super::weights::Loaded;
use crate::sample::{draw, next_token_logprobs, SplitMix};
use crate::tokenizer::{decode, EOS};

/// How a choice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The end token or a stop string.
    Stop,
    /// `max_tokens` or the context.
    Length,
    /// Generation was aborted by `pause_generation {"mode": "abort"}`.
    Abort,
}

impl FinishReason {
    /// The OpenAI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// What the model thread sends a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// One sampled token and its logprob.
    Token {
        /// The token id.
        id: u32,
        /// Its logprob under the sampling distribution.
        logprob: f32,
    },
    /// The end (always the last event, unless the client went away).
    Done(FinishReason),
}

/// A sequence to generate.
#[derive(Debug)]
pub struct Job {
    /// Prompt ids (starting with BOS).
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f64,
    /// Stop strings.
    pub stop: Vec<String>,
    /// The sampler's seed.
    pub seed: u64,
    /// The weights it generates with (fixed when it was submitted).
    pub weights: Arc<Loaded>,
    /// Where its events go.
    pub tx: mpsc::UnboundedSender<Event>,
}

/// Counters of the model thread.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Forward passes run.
    pub steps: AtomicU64,
    /// Sequences stepped, summed over passes (÷ steps = mean batch).
    pub stepped: AtomicU64,
    /// The largest batch of one pass.
    pub max_batch: AtomicU64,
    /// Tokens generated.
    pub tokens: AtomicU64,
    /// Jobs ended because their client went away.
    pub cancelled: AtomicU64,
    /// Jobs ended by an abort.
    pub aborted: AtomicU64,
}

/// The submit side of the model thread.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: std_mpsc::Sender<Job>,
    in_flight: Arc<watch::Sender<usize>>,
    abort_epoch: Arc<AtomicU64>,
    stats: Arc<BatchStats>,
}

struct Seq {
    job: Job,
    ids: Vec<u32>,
    out: usize,
    text: String,
    rng: SplitMix,
}

impl Batcher {
    /// Starts the model thread.
    /// Starts the model thread; `step_delay` is slept after every decoding step (zero in
    /// normal use; tests and demos slow generation down with it to act mid-generation).
    pub fn start(max_batch: usize, step_delay: std::time::Duration) -> std::io::Result<Batcher> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let in_flight = Arc::new(watch::channel(0usize).0);
        let abort_epoch = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(BatchStats::default());
        let b = Batcher {
            tx,
            in_flight: Arc::clone(&in_flight),
            abort_epoch: Arc::clone(&abort_epoch),
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name("fleet-infer-model".into())
            .spawn(move || {
                run(
                    rx,
                    max_batch.max(1),
                    step_delay,
                    &in_flight,
                    &abort_epoch,
                    &stats,
                )
            })?;
        Ok(b)
    }

    /// Queues a job; `false` if the model thread is gone.
    pub fn submit(&self, job: Job) -> bool {
        self.in_flight.send_modify(|n| *n += 1);
        if self.tx.send(job).is_err() {
            self.in_flight.send_modify(|n| *n = n.saturating_sub(1));
            return false;
        }
        true
    }

    /// Jobs submitted and not ended.
    pub fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// Resolves once no job is in flight.
    pub async fn idle(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Ends every job in flight or queued with `finish_reason: "abort"` (at the next step).
    pub fn abort_all(&self) {
        self.abort_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The thread's counters.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }
}

fn run(
    rx: std_mpsc::Receiver<Job>,
    max_batch: usize,
    step_delay: std::time::Duration,
    in_flight: &watch::Sender<usize>,
    abort_epoch: &AtomicU64,
    stats: &BatchStats,
) {
    let end = |seq_tx: &mpsc::UnboundedSender<Event>, why: Option<FinishReason>| {
        if let Some(w) = why {
            let _ = seq_tx.send(Event::Done(w));
        }
        in_flight.send_modify(|n| *n = n.saturating_sub(1));
    };
    let mut pending: VecDeque<Job> = VecDeque::new();
    let mut active: Vec<Seq> = Vec::new();
    let mut seen_epoch = abort_epoch.load(Ordering::SeqCst);
    loop {
        if active.is_empty() && pending.is_empty() {
            match rx.recv() {
                Ok(j) => pending.push_back(j),
                Err(_) => return,
            }
        }
        while let Ok(j) = rx.try_recv() {
            pending.push_back(j);
        }
        let epoch = abort_epoch.load(Ordering::SeqCst);
        if epoch != seen_epoch {
            seen_epoch = epoch;
            for s in active.drain(..) {
                stats.aborted.fetch_add(1, Ordering::Relaxed);
                end(&s.job.tx, Some(FinishReason::Abort));
            }
            for j in pending.drain(..) {
                stats.aborted.fetch_add(1, Ordering::Relaxed);
                end(&j.tx, Some(FinishReason::Abort));
            }
            continue;
        }
        while active.len() < max_batch {
            let Some(job) = pending.pop_front() else {
                break;
            };
            let context = job.weights.policy.config().context;
            if job.prompt.is_empty() || job.prompt.len() >= context || job.max_tokens == 0 {
                end(&job.tx, Some(FinishReason::Length));
                continue;
            }
            active.push(Seq {
                ids: job.prompt.clone(),
                out: 0,
                text: String::new(),
                rng: SplitMix::new(job.seed),
                job,
            });
        }
        active.retain(|s| {
            if s.job.tx.is_closed() {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                end(&s.job.tx, None);
                false
            } else {
                true
            }
        });
        if active.is_empty() {
            continue;
        }
        step(&mut active, stats);
        if !step_delay.is_zero() {
            std::thread::sleep(step_delay);
        }
        let mut i = 0;
        while i < active.len() {
            let s = &active[i];
            let context = s.job.weights.policy.config().context;
            let last = s.ids.last().copied();
            let stopped = last == Some(EOS)
                || s.job
                    .stop
                    .iter()
                    .any(|st| !st.is_empty() && s.text.ends_with(st.as_str()));
            let why = if stopped {
                Some(FinishReason::Stop)
            } else if s.out >= s.job.max_tokens || s.ids.len() >= context {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(w) = why {
                let s = active.swap_remove(i);
                end(&s.job.tx, Some(w));
            } else {
                i += 1;
            }
        }
    }
}

/// One forward pass per (weights, temperature) group, one token per sequence.
fn step(active: &mut [Seq], stats: &BatchStats) {
    let mut groups: Vec<(usize, u64, Vec<usize>)> = Vec::new();
    for (i, s) in active.iter().enumerate() {
        let key = (
            Arc::as_ptr(&s.job.weights) as usize,
            s.job.temperature.to_bits(),
        );
        match groups.iter_mut().find(|g| (g.0, g.1) == key) {
            Some(g) => g.2.push(i),
            None => groups.push((key.0, key.1, vec![i])),
        }
    }
    for (_, _, idx) in groups {
        let first = &active[idx[0]];
        let weights = Arc::clone(&first.job.weights);
        let temperature = first.job.temperature;
        let views: Vec<&[u32]> = idx.iter().map(|&i| active[i].ids.as_slice()).collect();
        stats.steps.fetch_add(1, Ordering::Relaxed);
        stats.stepped.fetch_add(idx.len() as u64, Ordering::Relaxed);
        stats
            .max_batch
            .fetch_max(idx.len() as u64, Ordering::Relaxed);
        match next_token_logprobs(&weights.policy, &views, temperature) {
            Ok(dists) => {
                for (&i, d) in idx.iter().zip(&dists) {
                    let s = &mut active[i];
                    let (tok, lp) = draw(d, temperature, &mut s.rng);
                    s.ids.push(tok);
                    s.out += 1;
                    s.text.push_str(&decode(&[tok]));
                    stats.tokens.fetch_add(1, Ordering::Relaxed);
                    let _ = s.job.tx.send(Event::Token {
                        id: tok,
                        logprob: lp,
                    });
                }
            }
            Err(e) => {
                // A model error is a bug (shapes are checked on admission): end those sequences
                // at the length limit rather than spin on them.
                tracing::error!(error = %e, "fleet infer: a decoding step failed");
                for &i in &idx {
                    active[i].out = usize::MAX;
                }
            }
        }
    }
}
