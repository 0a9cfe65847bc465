//! Hugging Face checkpoints in and out: `config.json` plus safetensors
//! (one `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`), for GPT-2 (`GPT2LMHeadModel`: Conv1D
//! weights `[in, out]`, as ours) and Llama (`LlamaForCausalLM`: Linear
//! weights `[out, in]`, as ours; q, k and v stacked into one projection).
//! Names and layouts are mapped here and nowhere else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use super::{GptConfig, LlamaConfig, Model, ModelConfig};
use crate::error::{Error, Result};
use crate::tensor::{DType, HostTensor, Shape};

/// A pretrained model: its sizes and its weights under our parameter names,
/// each of its spec's checkpoint shape ([`super::ParamSpec::file_shape`]), f32.
pub struct Pretrained {
    /// The sizes `config.json` gives.
    pub config: ModelConfig,
    /// Every parameter of the model, by our name.
    pub weights: Vec<(String, HostTensor)>,
}

fn bad(path: &Path, what: impl Into<String>) -> Error {
    Error::CheckpointMismatch {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Reads the Hugging Face checkpoint in directory `dir` (or the directory of
/// the file `dir` names): [`Error::CheckpointMismatch`] naming the first
/// missing or mis-shaped tensor, or the configuration field this build
/// cannot honour.
pub fn load(dir: &Path) -> Result<Pretrained> {
    let dir = if dir.is_file() {
        dir.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        dir.to_path_buf()
    };
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let cfg: Json = serde_json::from_str(&text)
        .map_err(|e| bad(&cfg_path, format!("config.json is not JSON: {e}")))?;
    let config = config_from_hf(&cfg).map_err(|w| bad(&cfg_path, w))?;
    let tensors = read_all(&dir)?;
    let weights = map_in(&config, tensors).map_err(|w| bad(&dir, w))?;
    // Every parameter present, each in its checkpoint shape.
    let model = config.build()?;
    let got: HashMap<&str, &HostTensor> = weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
    for spec in model.param_specs() {
        match got.get(spec.name.as_str()) {
            None => return Err(bad(&dir, format!("no tensor for parameter {}", spec.name))),
            Some(t) if t.shape != spec.file_shape() => {
                return Err(bad(
                    &dir,
                    format!(
                        "{} is {}, the model needs {}",
                        spec.name,
                        t.shape,
                        spec.file_shape()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(Pretrained { config, weights })
}

fn field<'a>(cfg: &'a Json, key: &str) -> std::result::Result<&'a Json, String> {
    cfg.get(key)
        .ok_or_else(|| format!("config.json has no {key}"))
}

fn usize_of(cfg: &Json, key: &str) -> std::result::Result<usize, String> {
    field(cfg, key)?
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| format!("config.json's {key} is not a number"))
}

fn f64_or(cfg: &Json, key: &str, default: f64) -> f64 {
    cfg.get(key).and_then(|v| v.as_f64()).unwrap_or(default)
}

/// Our config from a Hugging Face `config.json`; the reason otherwise.
fn config_from_hf(cfg: &Json) -> std::result::Result<ModelConfig, String> {
    let kind = field(cfg, "model_type")?.as_str().unwrap_or_default();
    match kind {
        "gpt2" => {
            let c = GptConfig {
                vocab_size: usize_of(cfg, "vocab_size")?,
                block_size: usize_of(cfg, "n_positions")?,
                n_layer: usize_of(cfg, "n_layer")?,
                n_head: usize_of(cfg, "n_head")?,
                n_embd: usize_of(cfg, "n_embd")?,
            };
            let act = cfg.get("activation_function").and_then(|a| a.as_str());
            if act.is_some_and(|a| a != "gelu_new") {
                return Err(format!(
                    "activation {act:?}: our GPT-2 uses gelu_new (tanh)"
                ));
            }
            if let Some(n) = cfg.get("n_inner").and_then(|n| n.as_u64()) {
                if n as usize != 4 * c.n_embd {
                    return Err(format!("n_inner {n}: our GPT-2's MLP is 4 × n_embd"));
                }
            }
            let eps = f64_or(cfg, "layer_norm_epsilon", super::layers::LN_EPS);
            if (eps - super::layers::LN_EPS).abs() > 1e-12 {
                return Err(format!("layer_norm_epsilon {eps}: our GPT-2's is 1e-5"));
            }
            c.validate().map_err(|e| e.to_string())?;
            Ok(ModelConfig::Gpt(c))
        }
        "llama" => {
            let hidden = usize_of(cfg, "hidden_size")?;
            let heads = usize_of(cfg, "num_attention_heads")?;
            // transformers 5 nests the base in rope_parameters.
            let theta = cfg
                .get("rope_theta")
                .or_else(|| cfg.get("rope_parameters").and_then(|r| r.get("rope_theta")))
                .and_then(|v| v.as_f64())
                .unwrap_or(10000.0);
            let scaling = cfg
                .get("rope_scaling")
                .filter(|s| !s.is_null())
                .or_else(|| {
                    cfg.get("rope_parameters")
                        .and_then(|r| r.get("rope_type"))
                        .filter(|t| t.as_str() != Some("default"))
                });
            if let Some(s) = scaling {
                return Err(format!("RoPE scaling {s} is not supported"));
            }
            for flag in ["attention_bias", "mlp_bias"] {
                if cfg.get(flag).and_then(|b| b.as_bool()) == Some(true) {
                    return Err(format!("{flag}: our Llama has no biases"));
                }
            }
            if let Some(act) = cfg.get("hidden_act").and_then(|a| a.as_str()) {
                if act != "silu" {
                    return Err(format!(
                        "hidden_act {act}: our Llama's MLP is SwiGLU (silu)"
                    ));
                }
            }
            if let Some(hd) = cfg.get("head_dim").and_then(|h| h.as_u64()) {
                if hd as usize * heads != hidden {
                    return Err(format!(
                        "head_dim {hd} × {heads} heads is not hidden_size {hidden}"
                    ));
                }
            }
            let c = LlamaConfig {
                vocab_size: usize_of(cfg, "vocab_size")?,
                block_size: usize_of(cfg, "max_position_embeddings")?,
                n_layer: usize_of(cfg, "num_hidden_layers")?,
                n_head: heads,
                n_kv_head: cfg
                    .get("num_key_value_heads")
                    .and_then(|v| v.as_u64())
                    .map_or(heads, |v| v as usize),
                n_embd: hidden,
                intermediate: usize_of(cfg, "intermediate_size")?,
                rope_theta: theta,
                norm_eps: f64_or(cfg, "rms_norm_eps", 1e-6),
                tie_embeddings: cfg
                    .get("tie_word_embeddings")
                    .and_then(|t| t.as_bool())
                    .unwrap_or(false),
            };
            c.validate().map_err(|e| e.to_string())?;
            Ok(ModelConfig::Llama(c))
        }
        other => Err(format!(
            "model_type {other:?}: gpt2 and llama checkpoints are read"
        )),
    }
}

/// Every tensor of the checkpoint in `dir`, widened to f32, by its file name.
fn read_all(dir: &Path) -> Result<HashMap<String, HostTensor>> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: Json =
            serde_json::from_str(&text).map_err(|e| bad(&index, format!("not JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad(&index, "it has no weight_map"))?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        shards.sort();
        shards.dedup();
        shards.into_iter().map(|s| dir.join(s)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    let mut out = HashMap::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(&f, format!("not safetensors: {e}")))?;
        for (name, v) in st.tensors() {
            let dtype = match v.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                other => {
                    return Err(bad(
                        &f,
                        format!("{name} is {other:?}; f32, f16 and bf16 are read"),
                    ))
                }
            };
            let t = HostTensor {
                shape: Shape::new(v.shape()),
                dtype,
                data: v.data().to_vec(),
            };
            let f32s = HostTensor::from_f32(t.shape.clone(), &t.to_f32_vec())?;
            out.insert(name, f32s);
        }
    }
    Ok(out)
}

/// Rows of `parts` stacked (all `[_, C]`).
fn stack_rows(parts: &[&HostTensor]) -> std::result::Result<HostTensor, String> {
    let c = parts[0].shape.last();
    let mut rows = 0;
    let mut data = Vec::new();
    for p in parts {
        if p.shape.rank() != 2 || p.shape.last() != c {
            return Err(format!(
                "q/k/v projections of shapes {} do not stack",
                p.shape
            ));
        }
        rows += p.shape.dims()[0];
        data.extend_from_slice(&p.data);
    }
    Ok(HostTensor {
        shape: Shape::new(&[rows, c]),
        dtype: DType::F32,
        data,
    })
}

/// The file's tensors under our names.
fn map_in(
    config: &ModelConfig,
    mut t: HashMap<String, HostTensor>,
) -> std::result::Result<Vec<(String, HostTensor)>, String> {
    let mut take = |names: &[String]| -> std::result::Result<HostTensor, String> {
        names
            .iter()
            .find_map(|n| t.remove(n))
            .ok_or_else(|| format!("no tensor {}", names[0]))
    };
    let mut out = Vec::new();
    match config {
        ModelConfig::Gpt(c) => {
            // Hub GPT-2 files name tensors with or without `transformer.`.
            let both = |n: &str| vec![format!("transformer.{n}"), n.to_string()];
            let mut names = vec!["wte.weight".to_string(), "wpe.weight".to_string()];
            for i in 0..c.n_layer {
                for p in [
                    "ln_1.weight",
                    "ln_1.bias",
                    "attn.c_attn.weight",
                    "attn.c_attn.bias",
                    "attn.c_proj.weight",
                    "attn.c_proj.bias",
                    "ln_2.weight",
                    "ln_2.bias",
                    "mlp.c_fc.weight",
                    "mlp.c_fc.bias",
                    "mlp.c_proj.weight",
                    "mlp.c_proj.bias",
                ] {
                    names.push(format!("h.{i}.{p}"));
                }
            }
            names.extend(["ln_f.weight".to_string(), "ln_f.bias".to_string()]);
            for n in names {
                let v = take(&both(&n))?;
                out.push((n, v));
            }
        }
        ModelConfig::Llama(c) => {
            let m = |n: &str| vec![format!("model.{n}")];
            out.push((
                "embed_tokens.weight".into(),
                take(&m("embed_tokens.weight"))?,
            ));
            for i in 0..c.n_layer {
                let p = format!("layers.{i}");
                let l = |n: &str| m(&format!("{p}.{n}"));
                out.push((
                    format!("{p}.input_layernorm.weight"),
                    take(&l("input_layernorm.weight"))?,
                ));
                let q = take(&l("self_attn.q_proj.weight"))?;
                let k = take(&l("self_attn.k_proj.weight"))?;
                let v = take(&l("self_attn.v_proj.weight"))?;
                out.push((
                    format!("{p}.self_attn.qkv_proj.weight"),
                    stack_rows(&[&q, &k, &v])?,
                ));
                for n in [
                    "self_attn.o_proj.weight",
                    "post_attention_layernorm.weight",
                    "mlp.gate_proj.weight",
                    "mlp.up_proj.weight",
                    "mlp.down_proj.weight",
                ] {
                    out.push((format!("{p}.{n}"), take(&l(n))?));
                }
            }
            out.push(("norm.weight".into(), take(&m("norm.weight"))?));
            if !c.tie_embeddings {
                out.push((
                    "lm_head.weight".into(),
                    take(&["lm_head.weight".to_string()])?,
                ));
            }
        }
    }
    Ok(out)
}

/// The Hugging Face `config.json` of `config`.
pub fn hf_config(config: &ModelConfig) -> Json {
    match config {
        ModelConfig::Gpt(c) => json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": c.vocab_size,
            "n_positions": c.block_size,
            "n_ctx": c.block_size,
            "n_embd": c.n_embd,
            "n_layer": c.n_layer,
            "n_head": c.n_head,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": super::layers::LN_EPS,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "tie_word_embeddings": true,
            // GPT-2's <|endoftext|> where the vocabulary is GPT-2's; none
            // otherwise (transformers warns of an id past the vocabulary).
            "bos_token_id": (c.vocab_size == 50257).then_some(50256),
            "eos_token_id": (c.vocab_size == 50257).then_some(50256),
            "torch_dtype": "float32",
        }),
        ModelConfig::Llama(c) => json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": c.vocab_size,
            "max_position_embeddings": c.block_size,
            "hidden_size": c.n_embd,
            "intermediate_size": c.intermediate,
            "num_hidden_layers": c.n_layer,
            "num_attention_heads": c.n_head,
            "num_key_value_heads": c.n_kv_head,
            "head_dim": c.head_dim(),
            "hidden_act": "silu",
            "rms_norm_eps": c.norm_eps,
            "rope_theta": c.rope_theta,
            "attention_bias": false,
            "mlp_bias": false,
            "tie_word_embeddings": c.tie_embeddings,
            "torch_dtype": "float32",
        }),
    }
}

/// Our weights (checkpoint shapes, f32) under Hugging Face's names and
/// layouts, for [`write`].
pub fn map_out(
    config: &ModelConfig,
    weights: &[(String, HostTensor)],
) -> Result<Vec<(String, HostTensor)>> {
    let mut out = Vec::new();
    for (name, t) in weights {
        match config {
            ModelConfig::Gpt(_) => out.push((format!("transformer.{name}"), t.clone())),
            ModelConfig::Llama(c) => {
                if let Some(p) = name.strip_suffix(".self_attn.qkv_proj.weight") {
                    let cols = t.shape.last();
                    let rows = [c.n_head, c.n_kv_head, c.n_kv_head].map(|h| h * c.head_dim());
                    let mut at = 0;
                    for (part, r) in ["q_proj", "k_proj", "v_proj"].iter().zip(rows) {
                        let bytes = r * cols * 4;
                        let piece = HostTensor {
                            shape: Shape::new(&[r, cols]),
                            dtype: DType::F32,
                            data: t.data[at..at + bytes].to_vec(),
                        };
                        at += bytes;
                        out.push((format!("model.{p}.self_attn.{part}.weight"), piece));
                    }
                } else if name == "lm_head.weight" {
                    out.push((name.clone(), t.clone()));
                } else {
                    out.push((format!("model.{name}"), t.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// Writes `config.json` and `model.safetensors` of `config` and our
/// `weights` into the new directory `dir`, built under a temporary name
/// beside it and renamed into place: [`Error::InvalidArgument`] if `dir`
/// already exists (nothing is overwritten).
pub fn write(dir: &Path, config: &ModelConfig, weights: &[(String, HostTensor)]) -> Result<()> {
    if dir.exists() {
        return Err(Error::invalid(
            "--out",
            format!(
                "{} exists; give a new directory (nothing is overwritten)",
                dir.display()
            ),
        ));
    }
    let tensors = map_out(config, weights)?;
    let mut tmp = dir.as_os_str().to_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let built = (|| -> Result<()> {
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let cfg = serde_json::to_string_pretty(&hf_config(config))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let p = tmp.join("config.json");
        crate::output::write_new_synced(&p, cfg.as_bytes()).map_err(|e| Error::io(&p, e))?;
        let mut views = Vec::new();
        for (n, t) in &tensors {
            let v = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                t.shape.dims().to_vec(),
                &t.data,
            )
            .map_err(|e| Error::Internal(format!("safetensors view of {n}: {e}")))?;
            views.push((n.clone(), v));
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = safetensors::tensor::serialize(views, Some(meta))
            .map_err(|e| Error::Internal(format!("safetensors: {e}")))?;
        let p = tmp.join("model.safetensors");
        crate::output::write_new_synced(&p, &bytes).map_err(|e| Error::io(&p, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
    })();
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    built
}
