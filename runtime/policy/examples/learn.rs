//! A quick learning experiment: warm up a fresh policy on a task, then run GRPO in process
//! and print the reward curve.
//!
//! `cargo run --release -p fleet-policy --example learn -- TASK WARMUP STEPS LR GROUPS SIZE`
//! (defaults: reverse 30 50 3e-3 8 8). The optimizer keeps its warm-up state into the RL phase
//! unless `FRESH=1` is set (then it starts fresh, as the trainer engine does).

use fleet_policy::sample::SplitMix;
use fleet_policy::task::Task;
use fleet_policy::train::{evaluate, self_play_step, warm_up, Learner};
use fleet_policy::{ModelConfig, Policy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let task: Task = arg(1).map(str::parse).transpose()?.unwrap_or_default();
    let warm: usize = arg(2).map(str::parse).transpose()?.unwrap_or(30);
    let steps: usize = arg(3).map(str::parse).transpose()?.unwrap_or(50);
    let lr: f64 = arg(4).map(str::parse).transpose()?.unwrap_or(3e-3);
    let groups: usize = arg(5).map(str::parse).transpose()?.unwrap_or(8);
    let group_size: usize = arg(6).map(str::parse).transpose()?.unwrap_or(8);
    let mut rng = SplitMix::new(7);
    let t0 = std::time::Instant::now();
    let mut learner = Learner::new(Policy::init(&ModelConfig::default(), 1)?, 3e-3)?;
    let r0 = evaluate(learner.policy(), task, 64, 1.0, &mut rng)?;
    let loss = warm_up(&mut learner, task, warm, 32, &mut rng)?;
    let r1 = evaluate(learner.policy(), task, 128, 1.0, &mut rng)?;
    println!(
        "random {r0:.3}; after {warm} warm-up steps (loss {loss:.3}) {r1:.3}; {:?}",
        t0.elapsed()
    );
    learner.set_lr(lr);
    if std::env::var_os("FRESH").is_some() {
        // A fresh optimizer, as the trainer engine has (it loads the warmed-up weights).
        learner = Learner::new(learner.policy().clone(), lr)?;
    }
    let mut curve = Vec::new();
    let t1 = std::time::Instant::now();
    for step in 0..steps {
        let st = self_play_step(
            &mut learner,
            task,
            groups,
            group_size,
            step as u64,
            &mut rng,
        )?;
        curve.push(st.mean_reward);
        if step % 5 == 0 || step + 1 == steps {
            println!(
                "step {step:3} reward {:.3} loss {:+.4} lpdiff {:?} {:?}",
                st.mean_reward,
                st.loss,
                st.max_logprob_diff,
                t0.elapsed()
            );
        }
    }
    let rl = t1.elapsed();
    let k = (steps / 10).max(1);
    let first: f64 = curve[..k].iter().sum::<f64>() / k as f64;
    let last: f64 = curve[steps - k..].iter().sum::<f64>() / k as f64;
    let r2 = evaluate(learner.policy(), task, 128, 1.0, &mut rng)?;
    println!(
        "first 10% {first:.3} last 10% {last:.3} gain {:.3}; eval after {r2:.3}; {} RL steps in {rl:?} ({:.2} steps/s)",
        last - first,
        steps,
        steps as f64 / rl.as_secs_f64()
    );
    Ok(())
}
