//! The trainer engine's loop in one process (for comparing with the loop over `fleet infer`):
//! `cargo run -p fleet-policy --example engine_loop -- LR STEPS`.

use fleet_policy::engine::{GrpoTrainer, TrainBatch, TrainerConfig};
use fleet_policy::grpo::Sample;
use fleet_policy::sample::{generate, SplitMix};
use fleet_policy::task::{reward, Task};
use fleet_policy::tokenizer::prompt_ids;
use fleet_policy::train::{completion_text, create_model_dir, Warmup};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let lr: f64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1e-3);
    let steps: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("fleet-engine-loop-{}", std::process::id()));
    let warm: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(30);
    let w = Warmup {
        task: Task::Reverse,
        steps: warm,
    };
    create_model_dir(&dir.join("model"), &Default::default(), 1, Some(w))?;
    let mut cfg = TrainerConfig::new(dir.join("model"));
    cfg.lr = lr;
    let mut t = GrpoTrainer::new(cfg).map_err(|e| e.to_string())?;
    let mut rng = SplitMix::new(21);
    let mut curve = Vec::new();
    for v in 0..steps {
        let problems: Vec<_> = (0..8).map(|_| Task::Reverse.problem(&mut rng)).collect();
        let prompts: Vec<Vec<u32>> = problems
            .iter()
            .flat_map(|p| std::iter::repeat_n(prompt_ids(&p.prompt), 8))
            .collect();
        let outs = generate(t.policy(), &prompts, 16, 1.0, &mut rng)?;
        let samples = outs
            .into_iter()
            .enumerate()
            .map(|(i, c)| Sample {
                group: problems[i / 8].prompt.clone(),
                reward: reward(&problems[i / 8].answer, &completion_text(&c.output_ids)),
                prompt_ids: c.prompt_ids,
                output_ids: c.output_ids,
                logprobs: c.logprobs,
                loss_mask: vec![],
                version: v,
            })
            .collect();
        let r = t
            .train_batch(TrainBatch {
                request_id: format!("v{}", v + 1),
                version: v + 1,
                samples,
                out_dir: dir.join("w"),
            })
            .map_err(|e| e.to_string())?;
        curve.push(r.stats.mean_reward);
    }
    println!("{curve:.2?}");
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
