//! Data: a byte-level tokenizer (vocab 256: any file works), a train/validation
//! split, and deterministic random batches.

use std::borrow::Cow;
use std::io::Read;
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
/// validation parts. The bytes are held once: the split is an offset.
pub struct Dataset {
    /// Where it came from, for logs and errors: the file path, or
    /// `tinyshakespeare (bundled)`.
    pub name: String,
    bytes: Cow<'static, [u8]>,
    cut: usize,
    /// SHA-256 of the training split, computed once (about 2 ms per MB).
    fingerprint: String,
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
    /// A batch of `b × t` with no token data: the planner's simulations need
    /// only the shapes, and must not hold a batch-sized buffer.
    pub(crate) fn shape_only(b: usize, t: usize) -> Batch {
        Batch {
            batch: b,
            seq: t,
            tokens: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// Whether this batch carries shapes only ([`Batch::shape_only`]).
    pub(crate) fn is_shape_only(&self) -> bool {
        self.tokens.is_empty()
            && self.targets.is_empty()
            && self.batch.checked_mul(self.seq).is_some_and(|n| n > 0)
    }

    /// [`Error::Shape`] unless `tokens` and `targets` each hold `batch × seq`
    /// ids (a batch built by hand can get this wrong).
    pub fn check(&self) -> Result<()> {
        let n = self.batch.checked_mul(self.seq);
        if n.is_none_or(|n| n == 0 || self.tokens.len() != n || self.targets.len() != n) {
            return Err(Error::shape(
                "batch",
                format!(
                    "a batch of {} × {} needs {} tokens and as many targets; it has {} and {}",
                    self.batch,
                    self.seq,
                    n.map_or("too many".into(), |n| n.to_string()),
                    self.tokens.len(),
                    self.targets.len()
                ),
            ));
        }
        Ok(())
    }

    /// Sequences `start .. start + n` as a batch of their own.
    pub fn slice(&self, start: usize, n: usize) -> Batch {
        if self.is_shape_only() {
            return Batch::shape_only(n, self.seq);
        }
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
        Self::from_cow("tinyshakespeare (bundled)", Cow::Borrowed(TINY_SHAKESPEARE))
            .expect("the bundled data set is valid")
    }

    /// Reads the file at `path`: [`Error::Io`] if it cannot be read,
    /// [`Error::Data`] if it is not a regular file (a device such as
    /// `/dev/zero` or a FIFO has no size to check and may never end), if it is
    /// larger than half the memory available now, or if it holds fewer than
    /// 20 bytes. Checked before anything is read.
    pub fn load(path: &Path) -> Result<Dataset> {
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
            return Err(bad(format!("it is {kind}; give a text file")));
        }
        let len = meta.len();
        let available = crate::backend::cpu::host_available_bytes();
        if len > available / 2 {
            return Err(bad(format!(
                "it is {}, and only {} of memory is available (a data set may take half); use a smaller file or free memory",
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
        Self::from_cow(&name, Cow::Owned(bytes))
    }

    /// A data set named `name` from raw bytes, the last tenth held out for
    /// validation; [`Error::Data`] if there are fewer than 20 bytes.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Dataset> {
        Self::from_cow(name, Cow::Owned(bytes))
    }

    fn from_cow(name: &str, bytes: Cow<'static, [u8]>) -> Result<Dataset> {
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
        let fingerprint = crate::checkpoint::sha256(&bytes[..cut]);
        Ok(Dataset {
            name: name.to_string(),
            bytes,
            cut,
            fingerprint,
        })
    }

    /// SHA-256 of the training split, in lowercase hex: what a checkpoint
    /// records so that a resume can tell the same data under another path from
    /// other data under the same one.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Number of tokens (bytes) in `split`.
    pub fn len(&self, split: Split) -> usize {
        self.part(split).len()
    }

    /// Whether the training part holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.cut == 0
    }

    fn part(&self, split: Split) -> &[u8] {
        match split {
            Split::Train => &self.bytes[..self.cut],
            Split::Val => &self.bytes[self.cut..],
        }
    }

    /// Checks that both splits hold at least one window of `seq + 1` tokens.
    pub fn check_seq(&self, seq: usize) -> Result<()> {
        let shortest = self.len(Split::Train).min(self.len(Split::Val));
        if shortest < seq + 1 {
            return Err(Error::Data {
                path: self.name.clone(),
                why: format!(
                    "its smaller split has {shortest} bytes, fewer than TrainConfig::seq_len {seq} + 1; use a longer file or a shorter TrainConfig::seq_len"
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
