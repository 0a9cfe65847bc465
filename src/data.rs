//! Data: a byte-level tokenizer (vocab 256: any file works), a train/validation
//! split, and deterministic random batches.

use std::path::Path;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// The bundled default data set: Shakespeare's plays, 1.1 MB, public domain.
pub const TINY_SHAKESPEARE: &[u8] = include_bytes!("../data/tinyshakespeare.txt");

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

/// A text held in memory as bytes (each byte a token), split into training and
/// validation parts.
pub struct Dataset {
    /// Where it came from, for logs and errors: the file path, or
    /// `tinyshakespeare (bundled)`.
    pub name: String,
    train: Vec<u8>,
    val: Vec<u8>,
}

/// One batch: `tokens [B, T]` and `targets [B, T]` (the next token of each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Number of sequences `B`.
    pub batch: usize,
    /// Tokens per sequence `T`.
    pub seq: usize,
    /// Input ids, `B * T` in row-major order.
    pub tokens: Vec<i32>,
    /// The token after each input position, `B * T` in row-major order.
    pub targets: Vec<i32>,
}

impl Batch {
    /// Sequences `start .. start + n` as a batch of their own.
    pub fn slice(&self, start: usize, n: usize) -> Batch {
        let (a, b) = (start * self.seq, (start + n) * self.seq);
        Batch {
            batch: n,
            seq: self.seq,
            tokens: self.tokens[a..b].to_vec(),
            targets: self.targets[a..b].to_vec(),
        }
    }
}

/// The last tenth of the text is held out for validation.
const VAL_FRACTION: f64 = 0.1;

impl Dataset {
    /// The bundled [`TINY_SHAKESPEARE`] text.
    pub fn bundled() -> Dataset {
        Self::from_bytes("tinyshakespeare (bundled)", TINY_SHAKESPEARE.to_vec())
            .expect("the bundled data set is valid")
    }

    /// Reads the file at `path`: [`Error::Io`] if it cannot be read,
    /// [`Error::Data`] if it holds fewer than 20 bytes.
    pub fn load(path: &Path) -> Result<Dataset> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&path.display().to_string(), bytes)
    }

    /// A data set named `name` from raw bytes, the last tenth held out for
    /// validation; [`Error::Data`] if there are fewer than 20 bytes.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Dataset> {
        if bytes.len() < 20 {
            return Err(Error::Data {
                path: name.to_string(),
                why: format!(
                    "it holds {} bytes; give a text file of at least a few kilobytes",
                    bytes.len()
                ),
            });
        }
        let cut = ((bytes.len() as f64) * (1.0 - VAL_FRACTION)) as usize;
        Ok(Dataset {
            name: name.to_string(),
            val: bytes[cut..].to_vec(),
            train: bytes[..cut].to_vec(),
        })
    }

    /// Number of tokens (bytes) in `split`.
    pub fn len(&self, split: Split) -> usize {
        self.part(split).len()
    }

    /// Whether the training part holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.train.is_empty()
    }

    fn part(&self, split: Split) -> &[u8] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// Checks that both splits hold at least one window of `seq + 1` tokens.
    pub fn check_seq(&self, seq: usize) -> Result<()> {
        let shortest = self.train.len().min(self.val.len());
        if shortest < seq + 1 {
            return Err(Error::Data {
                path: self.name.clone(),
                why: format!(
                    "its smaller split has {shortest} bytes, fewer than --seq {seq} + 1; use a longer file or a shorter --seq"
                ),
            });
        }
        Ok(())
    }

    /// `b` windows of `t + 1` tokens at random offsets drawn from `rng`.
    pub fn batch(&self, split: Split, rng: &mut Rng, b: usize, t: usize) -> Result<Batch> {
        self.check_seq(t)?;
        let data = self.part(split);
        let mut tokens = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        for _ in 0..b {
            let start = rng.below(data.len() - t);
            let w = &data[start..start + t + 1];
            tokens.extend(w[..t].iter().map(|&x| x as i32));
            targets.extend(w[1..].iter().map(|&x| x as i32));
        }
        Ok(Batch {
            batch: b,
            seq: t,
            tokens,
            targets,
        })
    }
}
