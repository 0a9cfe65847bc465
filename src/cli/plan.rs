//! `headroom plan`: will it fit? The plan by simulation only.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::{plan_text, resolve_budget, save_trace, step_config};
use headroom::nn::ModelConfig;
use headroom::{AdamW, Device, Error, Precision, Result, TrainConfig};

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Model preset: tiny, gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1558m (GPT-2);
    /// llama-tiny, smollm-135m, tinyllama-1.1b (Llama).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per sequence (default: the model's context).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Memory budget: 24GiB, 512MiB, 1.5GB, 90% (of --gpu's or --backend's
    /// memory, the default) or bytes.
    #[arg(long)]
    pub budget: Option<String>,
    #[command(flatten)]
    pub levers: super::LeverArgs,
    /// f32, bf16, f16 or auto (resolved for --backend).
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Whose memory a percentage budget is of: auto or cpu.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// List every candidate plan, the untried ones too (the JSON always does).
    #[arg(long)]
    pub verbose: bool,
    /// Write the chosen plan's simulated memory trace here (draw it with
    /// `headroom report`): where the predicted peak comes from, before any run.
    #[arg(long)]
    pub memory_trace: Option<PathBuf>,
}

pub fn plan(a: PlanArgs) -> Result<()> {
    if a.levers.gpu.as_deref() == Some("list") {
        print!("{}", super::gpu_list());
        return Ok(());
    }
    let config = ModelConfig::preset(&a.model)?;
    let seq = a.seq.unwrap_or(config.block_size());
    let mut device = Device::by_name(&a.backend)?;
    let precision: Precision = a.precision.parse()?;
    let mut cfg = step_config(
        &device,
        TrainConfig {
            batch: a.batch,
            seq_len: seq,
            precision,
            ..TrainConfig::default()
        },
    );
    cfg.validate(config.block_size())?;
    let mut opt = AdamW::new(config.default_lr());
    let gpu = a.levers.apply(&mut cfg, &mut opt)?;
    let budget_text = a.budget.as_deref().unwrap_or("90%");
    let budget_bytes = match gpu {
        Some(g) => super::resolve_gpu_budget(&mut device, budget_text, g)?,
        None => resolve_budget(&mut device, budget_text)?,
    };
    if let Some(p) = &a.memory_trace {
        headroom::output::preflight(p, "--memory-trace", &[])?;
    }
    let model = config.build()?;
    let start = Instant::now();
    let r = headroom::schedule::plan(&model, opt, &cfg, budget_bytes, &[]);
    let secs = start.elapsed().as_secs_f64();
    if let (Ok(p), Some(path)) = (&r, &a.memory_trace) {
        let choice = p.choice();
        let trace = headroom::schedule::planner::simulated_trace(
            &model,
            opt,
            &cfg,
            choice,
            Some(budget_bytes),
        )?;
        // stderr: stdout may be the --json answer.
        let line = save_trace(&trace, path, "--memory-trace", &[])?;
        eprintln!("simulated {line}");
    }
    match (r, a.json) {
        (Ok(p), true) => {
            let mut v = serde_json::to_value(&p).map_err(|e| Error::Internal(e.to_string()))?;
            v["fits"] = json!(true);
            v["model"] = json!(a.model);
            v["params"] = json!(model.num_params());
            v["plan_seconds"] = json!(secs);
            v["predicted_tokens_per_s"] = json!(p.predicted_tokens_per_s());
            println!("{v}");
            Ok(())
        }
        (Ok(p), false) => {
            println!("{} ({} parameters)", a.model, model.num_params());
            print!("{}", plan_text(&p, a.verbose));
            println!("planned in {:.0} ms (simulation only)", secs * 1e3);
            Ok(())
        }
        (Err(e @ Error::NoPlanFits { .. }), true) => {
            let Error::NoPlanFits { budget, needed, .. } = &e else {
                unreachable!()
            };
            println!(
                "{}",
                json!({"fits": false, "model": a.model, "budget_bytes": budget,
                       "needed_bytes": needed, "error": e.to_string(), "plan_seconds": secs})
            );
            Err(e)
        }
        (Err(e), _) => Err(e),
    }
}
