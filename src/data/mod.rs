//! Data: text files (bytes or BPE, [`tokenizer`]) and token files
//! ([`tokens`]), a train/validation split, and deterministic random batches.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

mod batch;
pub mod tokenizer;
pub mod tokens;

pub use batch::Batch;
pub use tokenizer::Tokenizer;
pub use tokens::Tokens;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// The bundled default data set: Shakespeare's plays, 1.1 MB, public domain.
pub const TINY_SHAKESPEARE: &[u8] = include_bytes!("../../data/tinyshakespeare.txt");

/// Bytes are tokens.
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Vocabulary size: one id per byte value.
    pub const VOCAB: usize = 256;
    /// Each byte of `text` as its id (`0..256`).
    pub fn encode(text: &[u8]) -> Vec<i32> {
        text.iter().map(|&b| b as i32).collect()
    }
    /// Decodes ids to text; bytes that are not valid UTF-8 show as U+FFFD.
    pub fn decode(ids: &[i32]) -> String {
        let bytes: Vec<u8> = ids.iter().map(|&i| i.clamp(0, 255) as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Which part of a data set to draw from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The first nine tenths of the bytes.
    Train,
    /// The last tenth, held out for validation.
    Val,
}

/// A data set's tokens, split into training and validation parts: the last
/// tenth of one file (by default) or a file of its own
/// ([`Dataset::with_val`]). Tokens are held once (bytes, ids, or a
/// read-only map of a token file); a split is an offset.
pub struct Dataset {
    /// Where it came from, for logs and errors: the file path, or
    /// `tinyshakespeare (bundled)`.
    pub name: String,
    tokens: Tokens,
    /// Training tokens are `tokens[..cut]`.
    cut: usize,
    /// A separate validation file's tokens; else `tokens[cut..]`.
    val: Option<Tokens>,
    /// SHA-256 of the training split, computed once (about 2 ms per MB).
    fingerprint: String,
    /// The largest id in either split, found in one pass at open.
    max_id: u32,
    /// What made the ids: `bytes`, `gpt2`, a tokenizer.json, or `token file`.
    pub tokenizer: String,
}

/// The last tenth of the tokens is held out for validation.
pub const VAL_FRACTION: f64 = 0.1;

impl Dataset {
    /// The bundled [`TINY_SHAKESPEARE`] text, one token per byte.
    pub fn bundled() -> Dataset {
        Self::from_tokens(
            "tinyshakespeare (bundled)",
            Tokens::Bytes(Cow::Borrowed(TINY_SHAKESPEARE)),
            "bytes",
        )
        .expect("the bundled data set is valid")
    }

    /// The bundled text tokenized by `tok` (in memory: there is no file to
    /// cache next to).
    pub fn bundled_with(tok: &Tokenizer) -> Result<Dataset> {
        let name = "tinyshakespeare (bundled)";
        let tokens = match tok {
            Tokenizer::Bytes => Tokens::Bytes(Cow::Borrowed(TINY_SHAKESPEARE)),
            _ => Tokens::Ids(tok.encode(name, TINY_SHAKESPEARE)?),
        };
        Self::from_tokens(name, tokens, &tok.name())
    }

    /// Reads the text file at `path`, one token per byte: [`Dataset::open`]
    /// with the byte tokenizer.
    pub fn load(path: &Path) -> Result<Dataset> {
        Self::open(path, &Tokenizer::Bytes)
    }

    /// The data set in the file at `path`: a token file (llm.c's `.bin`
    /// shard, a `.npy` of u16/u32, a headroom token cache; told apart by
    /// their first bytes and mapped read-only), or else a text tokenized by
    /// `tok` (BPE results cached next to the file, see
    /// [`tokenizer::cached_ids`]). [`Error::Io`] if it cannot be read;
    /// [`Error::Data`] if it is not a regular file (a device such as
    /// `/dev/zero` or a FIFO has no size to check and may never end), if a
    /// text is larger than half the memory available now, if a token file's
    /// header does not match its length, or if it holds fewer than 20
    /// tokens. Checked before anything is read.
    pub fn open(path: &Path, tok: &Tokenizer) -> Result<Dataset> {
        let name = path.display().to_string();
        let bad = |why: String| Error::Data {
            path: name.clone(),
            why,
        };
        let io = |e| Error::io(path, e);
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            let kind = if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file (a device, FIFO or socket has no size to check and may never end)"
            };
            return Err(bad(format!("it is {kind}; give a text or token file")));
        }
        let mut head = [0u8; 8];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(io)?;
        if let Some(kind) = tokens::sniff(&head[..n]) {
            let t = tokens::open(path, kind)?;
            return Self::from_tokens(&name, t, "token file");
        }
        let len = meta.len();
        let available = crate::backend::cpu::host_available_bytes();
        if len > available / 2 {
            return Err(bad(format!(
                "it is {}, and only {} of memory is available (a data set may take half); use a smaller file, a token file (mapped, not read), or free memory",
                crate::memory::format_bytes(len),
                crate::memory::format_bytes(available)
            )));
        }
        // The size was checked above; `take` keeps a file that grows while it
        // is read from going past it.
        let mut bytes = Vec::with_capacity(len as usize);
        std::fs::File::open(path)
            .and_then(|f| f.take(len).read_to_end(&mut bytes))
            .map_err(io)?;
        let tokens = match tok {
            Tokenizer::Bytes => Tokens::Bytes(Cow::Owned(bytes)),
            _ => tokenizer::cached_ids(path, &bytes, tok)?,
        };
        Self::from_tokens(&name, tokens, &tok.name())
    }

    /// A data set named `name` from raw bytes, one token per byte, the last
    /// tenth held out for validation; [`Error::Data`] if there are fewer
    /// than 20 bytes.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Dataset> {
        Self::from_tokens(name, Tokens::Bytes(Cow::Owned(bytes)), "bytes")
    }

    /// A data set named `name` from `tokens` made by `tokenizer`, the last
    /// tenth held out for validation; [`Error::Data`] if there are fewer
    /// than 20.
    pub fn from_tokens(name: &str, tokens: Tokens, tokenizer: &str) -> Result<Dataset> {
        let short = |n: usize| Error::Data {
            path: name.to_string(),
            why: format!("it holds {n} tokens; give a text file of at least a few kilobytes"),
        };
        if tokens.len() < 20 {
            return Err(short(tokens.len()));
        }
        let cut = ((tokens.len() as f64) * (1.0 - VAL_FRACTION)) as usize;
        let fingerprint = crate::checkpoint::sha256(&tokens.raw(0, cut));
        let max_id = tokens.max_id();
        Ok(Dataset {
            name: name.to_string(),
            tokens,
            cut,
            val: None,
            fingerprint,
            max_id,
            tokenizer: tokenizer.to_string(),
        })
    }

    /// All of this data set's tokens for training, and `val`'s for
    /// validation (split by file instead of by fraction).
    pub fn with_val(mut self, val: Dataset) -> Dataset {
        self.cut = self.tokens.len();
        self.fingerprint = crate::checkpoint::sha256(&self.tokens.raw(0, self.cut));
        self.max_id = self.max_id.max(val.max_id);
        self.name = format!("{} (validation: {})", self.name, val.name);
        self.val = Some(val.tokens);
        self
    }

    /// SHA-256 of the training split, in lowercase hex: what a checkpoint
    /// records so that a resume can tell the same data under another path from
    /// other data under the same one.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Number of tokens in `split`.
    pub fn len(&self, split: Split) -> usize {
        let (_, a, b) = self.part(split);
        b - a
    }

    /// Whether the training part holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.cut == 0
    }

    /// The tokens of `split` and its range in them.
    fn part(&self, split: Split) -> (&Tokens, usize, usize) {
        match (split, &self.val) {
            (Split::Train, _) => (&self.tokens, 0, self.cut),
            (Split::Val, Some(v)) => (v, 0, v.len()),
            (Split::Val, None) => (&self.tokens, self.cut, self.tokens.len()),
        }
    }

    /// The largest token id in the data (both splits).
    pub fn max_id(&self) -> u32 {
        self.max_id
    }

    /// [`Error::TokenOutOfRange`] naming the first id at or above `vocab`
    /// (its index, byte offset and split), when there is one: a model with
    /// `vocab` ids would read past its embedding. The maximum was found at
    /// open, so this costs a pass only when it fails.
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        if (self.max_id as usize) < vocab {
            return Ok(());
        }
        for split in [Split::Train, Split::Val] {
            let (t, a, b) = self.part(split);
            let found = (a..b).find(|&i| t.get(i) as usize >= vocab);
            if let Some(i) = found {
                return Err(Error::TokenOutOfRange {
                    path: self.name.clone(),
                    index: i as u64,
                    byte_offset: t.byte_offset(i) as u64,
                    id: t.get(i),
                    vocab,
                });
            }
        }
        Ok(())
    }

    /// Checks that both splits hold at least one window of `seq + 1` tokens.
    pub fn check_seq(&self, seq: usize) -> Result<()> {
        let shortest = self.len(Split::Train).min(self.len(Split::Val));
        if shortest < seq + 1 {
            return Err(Error::Data {
                path: self.name.clone(),
                why: format!(
                    "its smaller split has {shortest} tokens, fewer than TrainConfig::seq_len {seq} + 1; use a longer file or a shorter TrainConfig::seq_len"
                ),
            });
        }
        Ok(())
    }

    /// `b` windows of `t + 1` tokens at random offsets drawn from `rng`.
    pub fn batch(&self, split: Split, rng: &mut Rng, b: usize, t: usize) -> Result<Batch> {
        self.check_seq(t)?;
        let (data, lo, hi) = self.part(split);
        let mut tokens = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        for _ in 0..b {
            let start = lo + rng.below(hi - lo - t);
            tokens.extend((start..start + t).map(|i| data.get(i) as i32));
            targets.extend((start + 1..start + t + 1).map(|i| data.get(i) as i32));
        }
        Ok(Batch::tokens(b, t, tokens, targets))
    }
}
