//! A quick learning experiment: warm up a fresh policy on a task, then run GRPO and print the
//! reward curve. `cargo run --release -p fleet-policy --example learn -- reverse 40 60`
//! (task, warm-up steps, GRPO steps).

use fleet_policy::grpo::{GrpoConfig, Sample};
use fleet_policy::sample::{generate, SplitMix};
use fleet_policy::task::{reward, Task};
use fleet_policy::tokenizer::prompt_ids;
use fleet_policy::train::{completion_text, evaluate, warm_up, Learner};
use fleet_policy::{ModelConfig, Policy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let task: Task = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or_default();
    let warm: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(40);
    let steps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let lr: f64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1e-3);
    let groups: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let group_size: usize = args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let cfg = ModelConfig::default();
    let mut rng = SplitMix::new(7);
    let t0 = std::time::Instant::now();
    let mut learner = Learner::new(Policy::init(&cfg, 1)?, 3e-3)?;
    let r0 = evaluate(learner.policy(), task, 64, 1.0, &mut rng)?;
    let loss = warm_up(&mut learner, task, warm, 32, &mut rng)?;
    let r1 = evaluate(learner.policy(), task, 128, 1.0, &mut rng)?;
    println!("random {r0:.3}; after {warm} warm-up steps (loss {loss:.3}) {r1:.3}; {:?}", t0.elapsed());
    learner.set_lr(lr);
    let gcfg = GrpoConfig::default();
    let mut curve = Vec::new();
    for step in 0..steps {
        let problems: Vec<_> = (0..groups).map(|_| task.problem(&mut rng)).collect();
        let mut prompts = Vec::new();
        for p in &problems {
            for _ in 0..group_size {
                prompts.push(prompt_ids(&p.prompt));
            }
        }
        let outs = generate(learner.policy(), &prompts, 16, 1.0, &mut rng)?;
        let samples: Vec<Sample> = outs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = &problems[i / group_size];
                Sample {
                    group: format!("{}", i / group_size),
                    prompt_ids: c.prompt_ids.clone(),
                    output_ids: c.output_ids.clone(),
                    logprobs: c.logprobs.clone(),
                    loss_mask: vec![],
                    reward: reward(&p.answer, &completion_text(&c.output_ids)),
                    version: step as u64,
                }
            })
            .collect();
        let st = learner.grpo_step(&samples, &gcfg, step as u64)?;
        curve.push(st.mean_reward);
        if step % 5 == 0 || step + 1 == steps {
            println!(
                "step {step:3} reward {:.3} loss {:+.4} clipped {:.2} lpdiff {:?} {:?}",
                st.mean_reward, st.loss, st.clipped, st.max_logprob_diff, t0.elapsed()
            );
        }
    }
    let k = (steps / 10).max(1);
    let first: f64 = curve[..k].iter().sum::<f64>() / k as f64;
    let last: f64 = curve[steps - k..].iter().sum::<f64>() / k as f64;
    let r2 = evaluate(learner.policy(), task, 128, 1.0, &mut rng)?;
    println!("first 10% {first:.3} last 10% {last:.3} gain {:.3}; eval after {r2:.3}; {:?}", last - first, t0.elapsed());
    Ok(())
}
