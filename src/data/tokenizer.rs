//! Tokenizers: bytes (vocabulary 256, any file), GPT-2's BPE (`gpt2`, its
//! ranks bundled by `tiktoken-rs`, so it works offline), and any Hugging Face
//! `tokenizer.json` (through the `tokenizers` crate). A text tokenized by BPE
//! is cached next to it ([`cached_ids`]) under a header that records the
//! text's and the tokenizer's hashes, so a stale cache is never read.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::tokens::{self, CacheHeader, TokenFile, Tokens};
use crate::error::{Error, Result};

/// What turns text into ids and back.
pub enum Tokenizer {
    /// Each byte is its own id.
    Bytes,
    /// GPT-2's byte-level BPE (tiktoken's `r50k_base`), 50257 ids.
    Gpt2(Box<tiktoken_rs::CoreBPE>),
    /// A Hugging Face `tokenizer.json`.
    Hf {
        /// The parsed tokenizer.
        inner: Box<tokenizers::Tokenizer>,
        /// Where it was read from.
        path: PathBuf,
        /// SHA-256 of the file, in hex: its identity in caches.
        sha: String,
    },
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// GPT-2's vocabulary: 50,000 merges, 256 bytes and `<|endoftext|>`.
pub const GPT2_VOCAB: usize = 50257;

impl Tokenizer {
    /// `bytes`, `gpt2`, or the path of a `tokenizer.json`: [`Error::InvalidArgument`]
    /// for anything else, [`Error::Io`] for a file that cannot be read.
    pub fn from_arg(arg: &str) -> Result<Tokenizer> {
        match arg {
            "bytes" => Ok(Tokenizer::Bytes),
            "gpt2" => {
                let bpe = tiktoken_rs::r50k_base()
                    .map_err(|e| Error::Internal(format!("GPT-2's bundled BPE ranks: {e}")))?;
                Ok(Tokenizer::Gpt2(Box::new(bpe)))
            }
            path if path.ends_with(".json") => {
                let path = PathBuf::from(path);
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
                    Error::invalid(
                        "--tokenizer",
                        format!(
                            "{} is not a Hugging Face tokenizer.json: {e}",
                            path.display()
                        ),
                    )
                })?;
                Ok(Tokenizer::Hf {
                    inner: Box::new(inner),
                    path,
                    sha: hex(&Sha256::digest(&bytes)),
                })
            }
            other => Err(Error::invalid(
                "--tokenizer",
                format!("'{other}'; use bytes, gpt2, or the path of a tokenizer.json"),
            )),
        }
    }

    /// Number of ids it can produce (special tokens included).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Gpt2(_) => GPT2_VOCAB,
            Tokenizer::Hf { inner, .. } => inner.get_vocab_size(true),
        }
    }

    /// Its name in logs and checkpoints: `bytes`, `gpt2`, or the json's path.
    pub fn name(&self) -> String {
        match self {
            Tokenizer::Bytes => "bytes".into(),
            Tokenizer::Gpt2(_) => "gpt2".into(),
            Tokenizer::Hf { path, .. } => path.display().to_string(),
        }
    }

    /// What decides its ids, as a string a cache hashes: two tokenizers of
    /// one identity give the same ids for every text.
    pub fn identity(&self) -> String {
        match self {
            Tokenizer::Bytes => "bytes".into(),
            Tokenizer::Gpt2(_) => "tiktoken r50k_base (gpt2)".into(),
            Tokenizer::Hf { sha, .. } => format!("tokenizer.json sha256 {sha}"),
        }
    }

    /// A short tag for cache file names: `gpt2`, `hf-<12 hex>`.
    fn tag(&self) -> String {
        match self {
            Tokenizer::Bytes => "bytes".into(),
            Tokenizer::Gpt2(_) => "gpt2".into(),
            Tokenizer::Hf { sha, .. } => format!("hf-{}", &sha[..12]),
        }
    }

    /// The ids of `text`. BPE needs UTF-8: [`Error::Data`] names the first
    /// byte that is not (the byte tokenizer reads any file).
    pub fn encode(&self, name: &str, text: &[u8]) -> Result<Vec<u32>> {
        if let Tokenizer::Bytes = self {
            return Ok(text.iter().map(|&b| b as u32).collect());
        }
        let s = std::str::from_utf8(text).map_err(|e| Error::Data {
            path: name.to_string(),
            why: format!(
                "it is not UTF-8 at byte {}; {} reads text, --tokenizer bytes reads any file",
                e.valid_up_to(),
                self.name()
            ),
        })?;
        match self {
            Tokenizer::Bytes => unreachable!("handled above"),
            Tokenizer::Gpt2(bpe) => Ok(bpe.encode_ordinary(s)),
            Tokenizer::Hf { inner, .. } => {
                let enc = inner.encode_fast(s, false).map_err(|e| Error::Data {
                    path: name.to_string(),
                    why: format!("{} could not tokenize it: {e}", self.name()),
                })?;
                Ok(enc.get_ids().to_vec())
            }
        }
    }

    /// Text of `ids`; ids it does not know, and bytes that do not make UTF-8,
    /// show as U+FFFD.
    pub fn decode(&self, ids: &[i32]) -> String {
        let ids: Vec<u32> = ids.iter().map(|&i| i.max(0) as u32).collect();
        match self {
            Tokenizer::Bytes => {
                let b: Vec<u8> = ids.iter().map(|&i| i.min(255) as u8).collect();
                String::from_utf8_lossy(&b).into_owned()
            }
            Tokenizer::Gpt2(bpe) => {
                let known: Vec<_> = ids
                    .iter()
                    .filter(|&&i| (i as usize) < GPT2_VOCAB)
                    .map(|&i| i as _)
                    .collect();
                let bytes: Vec<u8> = bpe._decode_native_and_split(known).flatten().collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Tokenizer::Hf { inner, .. } => inner.decode(&ids, false).unwrap_or_default(),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

/// Where the cache of `text_path` tokenized by `tok` lives: next to it, as
/// `<file>.<tag>.tokens`.
pub fn cache_path(text_path: &Path, tok: &Tokenizer) -> PathBuf {
    let mut name = text_path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tokens", tok.tag()));
    text_path.with_file_name(name)
}

/// The ids of the text `bytes` (read from `path`) under `tok`: read from the
/// cache next to the text when its header matches the text's and the
/// tokenizer's hashes, else tokenized now and the cache (re)written
/// atomically (a temporary file renamed over it). A directory that cannot be
/// written to costs a warning and a tokenization per run, nothing more.
pub fn cached_ids(path: &Path, bytes: &[u8], tok: &Tokenizer) -> Result<Tokens> {
    let name = path.display().to_string();
    let header = CacheHeader {
        count: 0,
        text_sha: digest(bytes),
        tokenizer_sha: digest(tok.identity().as_bytes()),
    };
    let cache = cache_path(path, tok);
    if let Ok(t) = tokens::open(&cache, TokenFile::Cache) {
        let fresh = match &t {
            Tokens::Mapped { map, .. } => tokens::cache_header(map).is_ok_and(|h| {
                h.text_sha == header.text_sha && h.tokenizer_sha == header.tokenizer_sha
            }),
            _ => false,
        };
        if fresh {
            log::info!("tokens of {name} from the cache {}", cache.display());
            return Ok(t);
        }
        log::info!(
            "the token cache {} is stale (other text or tokenizer); rebuilding it",
            cache.display()
        );
    }
    let ids = tok.encode(&name, bytes)?;
    if let Err(e) = write_cache(
        &cache,
        &CacheHeader {
            count: ids.len(),
            ..header
        },
        &ids,
    ) {
        log::warn!(
            "could not write the token cache {}: {e}; tokenizing again next run",
            cache.display()
        );
    }
    Ok(Tokens::Ids(ids))
}

fn write_cache(path: &Path, header: &CacheHeader, ids: &[u32]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&header.to_bytes())?;
        f.write_all(bytemuck::cast_slice(ids))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
