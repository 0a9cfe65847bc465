//! headroom against Hugging Face `transformers`, as llm.c's test_gpt2 checks
//! itself against PyTorch: a tiny GPT-2 and a tiny Llama (random weights,
//! fixed seed; made by benches/reference/make_fixtures.py, committed under
//! tests/fixtures/) are loaded through `--init-from`'s code, run on the
//! dump's batch, and must give its logits, loss and every parameter's
//! gradient: on cpu within 1e-4 of each tensor's largest element, on wgpu
//! within the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use headroom::graph::{autodiff, Graph};
use headroom::nn::{hf, Model};
use headroom::schedule::{execute, lower, Mode};
use headroom::{DType, Device, HostTensor, Shape};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn reference(dir: &Path) -> HashMap<String, HostTensor> {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let dtype = match v.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::I32 => DType::I32,
                d => panic!("{n}: {d:?}"),
            };
            let t = HostTensor {
                shape: Shape::new(v.shape()),
                dtype,
                data: v.data().to_vec(),
            };
            (n, t)
        })
        .collect()
}

/// Largest difference over the reference's largest magnitude.
fn rel_err(want: &[f32], got: &[f32]) -> f64 {
    assert_eq!(want.len(), got.len());
    let scale = want
        .iter()
        .fold(0f64, |m, x| m.max(x.abs() as f64))
        .max(1e-30);
    let diff = want
        .iter()
        .zip(got)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
    diff / scale
}

/// Runs the fixture's model on `dev`; the worst relative error of logits,
/// loss and gradients against the dump, printed per tensor kind.
fn check(name: &str, mut dev: Device) -> [f64; 3] {
    let dir = fixture(name);
    let pre = hf::load(&dir).unwrap();
    let model = pre.config.build().unwrap();
    let r = reference(&dir);
    let tokens = &r["tokens"];
    let (b, t) = (tokens.shape.dims()[0], tokens.shape.dims()[1]);
    let v = model.vocab_size();

    let mut g = Graph::new();
    let tok = g.input("tokens", [b, t], DType::I32).unwrap();
    let tgt = g.input("targets", [b, t], DType::I32).unwrap();
    let logits = model.forward(&mut g, tok).unwrap(); // [B, T, V padded]
    let loss = g.cross_entropy_classes(logits, tgt, v).unwrap();
    let specs = model.param_specs();
    let params: Vec<_> = specs.iter().map(|s| s.record(&mut g).unwrap()).collect();
    let grads = autodiff::backward(&mut g, loss, &params).unwrap();
    let outputs: Vec<_> = [logits, loss].into_iter().chain(grads).collect();
    let prog = lower(&g, &outputs).unwrap();

    let weights: HashMap<&str, &HostTensor> =
        pre.weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut held = Vec::new();
    for (s, &p) in specs.iter().zip(&params) {
        held.push((
            p,
            dev.upload(&s.pad(weights[s.name.as_str()]).unwrap())
                .unwrap(),
        ));
    }
    let ids =
        |t: &HostTensor| HostTensor::from_i32(t.shape.clone(), &t.to_i32_vec().unwrap()).unwrap();
    let targets = &r["targets"];
    let up_t = dev.upload(&ids(tokens)).unwrap();
    let up_y = dev.upload(&ids(targets)).unwrap();
    let mut bind: HashMap<_, _> = held.iter().map(|(p, d)| (*p, d.view())).collect();
    bind.insert(tok, up_t.view());
    bind.insert(tgt, up_y.view());
    let res = execute(&mut dev, &g, &prog, &bind, Mode::Train).unwrap();
    let host: Vec<HostTensor> = res
        .iter()
        .map(|x| dev.download(x.view()).unwrap())
        .collect();

    // Logits: the first V columns of each padded row.
    let width = host[0].shape.last();
    let ours: Vec<f32> = host[0]
        .to_f32_vec()
        .chunks(width)
        .flat_map(|row| row[..v].to_vec())
        .collect();
    let e_logits = rel_err(&r["logits"].to_f32_vec(), &ours);
    let e_loss = rel_err(&r["loss"].to_f32_vec(), &host[1].to_f32_vec());
    // Gradients under Hugging Face's names and layouts.
    let ours: Vec<(String, HostTensor)> = specs
        .iter()
        .zip(&host[2..])
        .map(|(s, t)| (s.name.clone(), s.strip(t.clone())))
        .collect();
    let mapped = hf::map_out(&pre.config, &ours).unwrap();
    let mut e_grad = 0f64;
    let mut worst = String::new();
    let mut compared = 0;
    for (n, t) in &mapped {
        let want = &r[&format!("grad.{n}")];
        assert_eq!(want.shape, t.shape, "{n}");
        let e = rel_err(&want.to_f32_vec(), &t.to_f32_vec());
        compared += 1;
        if e > e_grad {
            (e_grad, worst) = (e, n.clone());
        }
    }
    let dumped = r.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(compared, dumped, "every dumped gradient is compared");
    println!(
        "{name} on {}: logits {e_logits:.2e}, loss {e_loss:.2e}, gradients {e_grad:.2e} (worst {worst})",
        dev.name()
    );
    [e_logits, e_loss, e_grad]
}

const TOL: f64 = 1e-4;

fn assert_close(errs: [f64; 3]) {
    for e in errs {
        assert!(e <= TOL, "{errs:?}");
    }
}

#[test]
fn gpt2_matches_transformers_on_cpu() {
    assert_close(check("gpt2_tiny", Device::cpu()));
}

#[test]
fn llama_matches_transformers_on_cpu() {
    assert_close(check("llama_tiny", Device::cpu()));
}

fn wgpu() -> Option<Device> {
    match Device::wgpu() {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("HEADROOM_REQUIRE_WGPU").is_none() => {
            eprintln!("skipping the wgpu test: {e}");
            None
        }
        Err(e) => panic!("HEADROOM_REQUIRE_WGPU is set but wgpu is unusable: {e}"),
    }
}

#[test]
fn gpt2_matches_transformers_on_wgpu() {
    if let Some(d) = wgpu() {
        assert_close(check("gpt2_tiny", d));
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let d = std::env::temp_dir().join(format!("headroom-hf-missing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let src = fixture("gpt2_tiny");
    std::fs::copy(src.join("config.json"), d.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("h.1.mlp.c_fc.weight"))
        .collect();
    std::fs::write(
        d.join("model.safetensors"),
        safetensors::tensor::serialize(kept, None).unwrap(),
    )
    .unwrap();
    let e = hf::load(&d).err().unwrap();
    assert!(e.to_string().contains("h.1.mlp.c_fc.weight"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn step_one_from_init_from_has_the_dumps_loss_and_exports_back() {
    use headroom::data::Batch;
    use headroom::schedule::{Choice, Recompute};
    use headroom::{AdamW, TrainConfig, Trainer};
    let dir = fixture("gpt2_tiny");
    let pre = hf::load(&dir).unwrap();
    let r = reference(&dir);
    let cfg = TrainConfig {
        batch: 2,
        seq_len: 8,
        steps: 1,
        ..TrainConfig::default()
    };
    let choice = Choice {
        micro_batch: 2,
        recompute: Recompute::None,
        levers: Default::default(),
    };
    let model = pre.config.build().unwrap();
    let mut t = Trainer::with_plan(Device::cpu(), model, AdamW::new(1e-3), cfg, choice).unwrap();
    t.set_weights(&dir, &pre.weights).unwrap();
    let ids = |n: &str| r[n].to_i32_vec().unwrap();
    let b = Batch::tokens(2, 8, ids("tokens"), ids("targets"));
    let loss = t.step(&b).unwrap().loss;
    let want = r["loss"].to_f32_vec()[0];
    println!("step 1 loss {loss} (transformers: {want})");
    assert!((loss - want).abs() <= 1e-6 * want.abs(), "{loss} vs {want}");

    // Exported back, the weights read in again are the ones step 1 left.
    let out = std::env::temp_dir().join(format!("headroom-hf-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let now: Vec<(String, HostTensor)> = t
        .parameters()
        .unwrap()
        .into_iter()
        .zip(t.model().param_specs())
        .map(|((n, v), s)| (n, s.strip(v)))
        .collect();
    hf::write(&out, &pre.config, &now).unwrap();
    let back = hf::load(&out).unwrap();
    assert_eq!(back.config, pre.config);
    assert_eq!(back.weights, now);
    assert!(
        hf::write(&out, &pre.config, &now).is_err(),
        "an existing directory is never overwritten"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_sharded_checkpoint_reads_as_the_single_file_does() {
    let src = fixture("llama_tiny");
    let d = std::env::temp_dir().join(format!("headroom-hf-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(src.join("config.json"), d.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let all = st.tensors();
    // Half the tensors in each of two shards, and the index that lists them.
    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let part: Vec<_> = part.into_iter().map(|(_, t)| t).collect();
        for (n, _) in &part {
            map.insert(n.clone(), file.into());
        }
        std::fs::write(
            d.join(file),
            safetensors::tensor::serialize(part, None).unwrap(),
        )
        .unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let sharded = hf::load(&d).unwrap();
    let single = hf::load(&src).unwrap();
    assert_eq!(sharded.config, single.config);
    assert_eq!(sharded.weights, single.weights);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn llama_matches_transformers_on_wgpu() {
    if let Some(d) = wgpu() {
        assert_close(check("llama_tiny", d));
    }
}
