//! Memory strategies compared on the same model and batch: the seed table of
//! `examples/seed_table.rs` ((a) f32, (b) + recompute, (c) + low precision,
//! (d) the planner under a budget), peak and tokens/s as ratios to (a).
//!
//! cargo bench --bench strategies [-- --backend wgpu --model gpt2-124m --batch 8 --seq 256]

#[path = "../examples/seed_table.rs"]
mod seed_table;

fn main() -> headroom::Result<()> {
    seed_table::main()
}
