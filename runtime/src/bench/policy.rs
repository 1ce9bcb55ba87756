//! `fleet bench policy`: the tiny policy's inference and training speed.
//!
//! Inference: the same prompts decoded by calling the model directly in process (the raw hop:
//! one batched `generate` of `concurrent` sequences at a time) and through a `fleet infer`
//! server on loopback (`concurrent` HTTP clients, each sending chat completions one after the
//! other, batched by the server's model thread); tokens/s of each and their ratio. Training:
//! GRPO steps/s on batches of `groups × group_size` sampled completions, and supervised
//! warm-up steps/s.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fleet_policy::grpo::{GrpoConfig, Sample};
use fleet_policy::sample::{generate, SplitMix};
use fleet_policy::server::{serve, InferConfig};
use fleet_policy::task::Task;
use fleet_policy::tokenizer::prompt_ids;
use fleet_policy::train::{warm_up, Learner};
use fleet_policy::{ModelConfig, Policy};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Runs the benchmark and returns its Markdown tables.
pub async fn run(
    requests: usize,
    concurrent: usize,
    max_tokens: usize,
    steps: usize,
) -> anyhow::Result<String> {
    let concurrent = concurrent.max(1);
    let dir = std::env::temp_dir().join(format!("fleet-bench-policy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = ModelConfig::default();
    Policy::create_dir(&dir, &cfg, 1)?;
    let policy = Policy::load(&cfg, &dir.join(fleet_policy::model::WEIGHTS_FILE))?;
    let prompts: Vec<String> = {
        let mut rng = SplitMix::new(3);
        (0..requests)
            .map(|_| Task::Reverse.problem(&mut rng).prompt)
            .collect()
    };

    // Raw: batches of `concurrent` prompts decoded in process.
    let p2 = policy.clone();
    let pr = prompts.clone();
    let (raw_tokens, raw_time) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, Duration)> {
            let mut rng = SplitMix::new(5);
            let t = Instant::now();
            let mut tokens = 0;
            for chunk in pr.chunks(concurrent) {
                let ids: Vec<Vec<u32>> = chunk.iter().map(|p| prompt_ids(p)).collect();
                tokens += generate(&p2, &ids, max_tokens, 1.0, &mut rng)?
                    .iter()
                    .map(|c| c.output_ids.len())
                    .sum::<usize>();
            }
            Ok((tokens, t.elapsed()))
        })
        .await??;

    // Through the server.
    let mut icfg = InferConfig::new(&dir);
    icfg.max_batch = concurrent;
    let server = serve(icfg).await?;
    let url = format!("http://{}/v1/chat/completions", server.addr());
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let prompts = std::sync::Arc::new(prompts);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrent {
        let (client, url, next, prompts) =
            (client.clone(), url.clone(), next.clone(), prompts.clone());
        tasks.push(tokio::spawn(async move {
            let mut tokens = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = prompts.get(i) else { break };
                let body = serde_json::json!({"model": "fleet-policy", "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": p}], "logprobs": true, "return_token_ids": true});
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))?;
                let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req)).await??;
                let bytes = resp.into_body().collect().await?.to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&bytes)?;
                tokens += v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
            }
            anyhow::Ok(tokens)
        }));
    }
    let mut served_tokens = 0;
    for t in tasks {
        served_tokens += t.await??;
    }
    let served_time = t.elapsed();
    server.shutdown().await;

    // Training.
    let (grpo_sps, sft_sps, batch) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, f64, usize)> {
            let mut rng = SplitMix::new(9);
            let mut learner = Learner::new(policy, 3e-3)?;
            let t = Instant::now();
            warm_up(&mut learner, Task::Reverse, steps, 32, &mut rng)?;
            let sft = steps as f64 / t.elapsed().as_secs_f64();
            let problems: Vec<_> = (0..8).map(|_| Task::Reverse.problem(&mut rng)).collect();
            let ids: Vec<Vec<u32>> = problems
                .iter()
                .flat_map(|p| std::iter::repeat_n(prompt_ids(&p.prompt), 8))
                .collect();
            let outs = generate(learner.policy(), &ids, 16, 1.0, &mut rng)?;
            let samples: Vec<Sample> = outs
                .into_iter()
                .enumerate()
                .map(|(i, c)| Sample {
                    group: (i / 8).to_string(),
                    prompt_ids: c.prompt_ids,
                    output_ids: c.output_ids,
                    logprobs: c.logprobs,
                    loss_mask: vec![],
                    reward: (i % 8) as f64 / 7.0,
                    version: 0,
                })
                .collect();
            let t = Instant::now();
            for _ in 0..steps {
                learner.grpo_step(&samples, &GrpoConfig::default(), 0)?;
            }
            Ok((steps as f64 / t.elapsed().as_secs_f64(), sft, samples.len()))
        })
        .await??;
    let _ = std::fs::remove_dir_all(&dir);

    let raw_tps = raw_tokens as f64 / raw_time.as_secs_f64();
    let served_tps = served_tokens as f64 / served_time.as_secs_f64();
    Ok(format!(
        "| path ({requests} completions, ≤ {max_tokens} tokens, {concurrent} at once) | tokens | time | tokens/s | vs raw |\n\
         | --- | --- | --- | --- | --- |\n\
         | raw: `generate` in process, batches of {concurrent} | {raw_tokens} | {raw_time:.2?} | {raw_tps:.0} | 1.00× |\n\
         | `fleet infer` over HTTP, {concurrent} clients | {served_tokens} | {served_time:.2?} | {served_tps:.0} | {:.2}× |\n\n\
         | training step | steps/s |\n| --- | --- |\n\
         | GRPO step, {batch} completions (forward + backward + AdamW) | {grpo_sps:.2} |\n\
         | supervised warm-up step, 32 examples | {sft_sps:.2} |\n",
        served_tps / raw_tps
    ))
}
