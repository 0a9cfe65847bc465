//! Token storage and token files. A data set's tokens are bytes (a text read
//! by the byte tokenizer), ids in memory (a text tokenized now), or a token
//! file mapped read-only: llm.c's `.bin` shards, NumPy `.npy` arrays of
//! u16/u32, and headroom's own tokenizer cache (`.tokens`). Nothing here ever
//! writes a file it reads.

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

/// The tokens of one file, however they are held.
pub enum Tokens {
    /// Each byte one token (vocabulary 256).
    Bytes(Cow<'static, [u8]>),
    /// Ids in memory.
    Ids(Vec<u32>),
    /// Little-endian ids of `width` bytes at `start..` of a read-only map.
    Mapped {
        /// The whole file.
        map: Mmap,
        /// Byte offset of the first id (the header's length).
        start: usize,
        /// 2 (u16) or 4 (u32).
        width: usize,
        /// Number of ids.
        len: usize,
    },
}

impl Tokens {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            Tokens::Bytes(b) => b.len(),
            Tokens::Ids(v) => v.len(),
            Tokens::Mapped { len, .. } => *len,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id at `i`.
    pub fn get(&self, i: usize) -> u32 {
        match self {
            Tokens::Bytes(b) => b[i] as u32,
            Tokens::Ids(v) => v[i],
            Tokens::Mapped {
                map, start, width, ..
            } => {
                let at = start + i * width;
                match width {
                    2 => u16::from_le_bytes([map[at], map[at + 1]]) as u32,
                    _ => u32::from_le_bytes([map[at], map[at + 1], map[at + 2], map[at + 3]]),
                }
            }
        }
    }

    /// The raw bytes of tokens `a..b` as stored (what a fingerprint hashes:
    /// for a text read as bytes, the text itself).
    pub fn raw(&self, a: usize, b: usize) -> Cow<'_, [u8]> {
        match self {
            Tokens::Bytes(v) => Cow::Borrowed(&v[a..b]),
            Tokens::Ids(v) => Cow::Borrowed(bytemuck::cast_slice(&v[a..b])),
            Tokens::Mapped {
                map, start, width, ..
            } => Cow::Borrowed(&map[start + a * width..start + b * width]),
        }
    }

    /// The largest id (0 when empty), in one pass.
    pub fn max_id(&self) -> u32 {
        match self {
            Tokens::Bytes(b) => b.iter().copied().max().unwrap_or(0) as u32,
            Tokens::Ids(v) => v.iter().copied().max().unwrap_or(0),
            Tokens::Mapped { .. } => (0..self.len()).map(|i| self.get(i)).max().unwrap_or(0),
        }
    }

    /// The index of the first id at or above `vocab`.
    pub fn first_at_or_above(&self, vocab: u32) -> Option<usize> {
        (0..self.len()).find(|&i| self.get(i) >= vocab)
    }

    /// Byte offset of token `i` in its file (for error messages).
    pub fn byte_offset(&self, i: usize) -> usize {
        match self {
            Tokens::Bytes(_) => i,
            Tokens::Ids(_) => i * 4,
            Tokens::Mapped { start, width, .. } => start + i * width,
        }
    }
}

/// The kinds of token file [`open`] reads, told apart by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFile {
    /// llm.c's shard: 256 little-endian i32 (magic 20240520, version, count),
    /// then u16 ids (version 1) or u32 ids (version 2).
    Llmc,
    /// A NumPy `.npy` array of `<u2` or `<u4`, C order.
    Npy,
    /// headroom's tokenizer cache ([`super::tokenizer`]).
    Cache,
}

/// llm.c's shard magic number (`header[0]`).
pub const LLMC_MAGIC: i32 = 20240520;
/// llm.c's header: 256 i32.
pub const LLMC_HEADER_BYTES: usize = 256 * 4;
/// The first bytes of a headroom token cache.
pub const CACHE_MAGIC: &[u8; 8] = b"HRTOKENS";
/// A cache's header length; the ids follow.
pub const CACHE_HEADER_BYTES: usize = 128;

/// Which token file `head` (a file's first bytes) starts, if any.
pub fn sniff(head: &[u8]) -> Option<TokenFile> {
    if head.starts_with(CACHE_MAGIC) {
        return Some(TokenFile::Cache);
    }
    if head.starts_with(b"\x93NUMPY") {
        return Some(TokenFile::Npy);
    }
    if head.len() >= 4 && i32::from_le_bytes([head[0], head[1], head[2], head[3]]) == LLMC_MAGIC {
        return Some(TokenFile::Llmc);
    }
    None
}

/// Maps the token file at `path` of kind `kind` read-only and checks its
/// header against its length: [`Error::Data`] naming what is wrong.
pub fn open(path: &Path, kind: TokenFile) -> Result<Tokens> {
    let name = path.display().to_string();
    let bad = |why: String| Error::Data {
        path: name.clone(),
        why,
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and private to this process; a file
    // changed under a run by another program would change the tokens read
    // (as it would for any reader), never memory safety of our own data.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (start, width, len) = match kind {
        TokenFile::Llmc => llmc_header(&map).map_err(bad)?,
        TokenFile::Npy => npy_header(&map).map_err(bad)?,
        TokenFile::Cache => {
            let h = cache_header(&map).map_err(bad)?;
            (CACHE_HEADER_BYTES, 4, h.count)
        }
    };
    Ok(Tokens::Mapped {
        map,
        start,
        width,
        len,
    })
}

fn i32_at(b: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// `(start, width, len)` of an llm.c shard.
fn llmc_header(b: &[u8]) -> std::result::Result<(usize, usize, usize), String> {
    if b.len() < LLMC_HEADER_BYTES {
        return Err(format!(
            "it is {} bytes, shorter than llm.c's 1024-byte header",
            b.len()
        ));
    }
    let (version, count) = (i32_at(b, 1), i32_at(b, 2));
    let width = match version {
        1 => 2,
        2 => 4,
        v => {
            return Err(format!(
                "llm.c shard version {v}; version 1 (u16 ids) and 2 (u32 ids) are read"
            ))
        }
    };
    let count = usize::try_from(count).map_err(|_| format!("its header counts {count} tokens"))?;
    let want = LLMC_HEADER_BYTES + count * width;
    if b.len() != want {
        return Err(format!(
            "its header counts {count} tokens of {width} bytes ({want} bytes with the header), but the file is {} bytes; the shard is truncated or not llm.c's",
            b.len()
        ));
    }
    Ok((LLMC_HEADER_BYTES, width, count))
}

/// `(start, width, len)` of a 1-D (or C-order n-D, read flat) `.npy` of
/// little-endian u16 or u32.
fn npy_header(b: &[u8]) -> std::result::Result<(usize, usize, usize), String> {
    if b.len() < 10 {
        return Err("it is too short for a .npy header".into());
    }
    let major = b[6];
    let (hlen, at) = match major {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => {
            return Err(format!(
                ".npy format version {v} is not read (1, 2 and 3 are)"
            ))
        }
    };
    let start = at + hlen;
    let header = b
        .get(at..start)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("its .npy header is cut short or not text")?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = header[i + key.len() + 2..].trim_start().strip_prefix(':')?;
        Some(rest.trim_start())
    };
    let descr = field("descr").ok_or("its .npy header has no 'descr'")?;
    let width = if descr.starts_with("'<u2'") || descr.starts_with("'|u2'") {
        2
    } else if descr.starts_with("'<u4'") || descr.starts_with("'|u4'") {
        4
    } else {
        let d: String = descr.chars().take_while(|c| *c != ',').collect();
        return Err(format!(
            "its dtype is {d}; token arrays must be little-endian uint16 or uint32 (numpy '<u2' or '<u4')"
        ));
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("it is in Fortran order; save it C-ordered (np.ascontiguousarray)".into());
    }
    let shape = field("shape").ok_or("its .npy header has no 'shape'")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("its .npy shape is not a tuple")?;
    let mut count = 1usize;
    for d in inner.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d: usize = d
            .parse()
            .map_err(|_| format!("its .npy shape ({inner}) is not numbers"))?;
        count = count.checked_mul(d).ok_or("its .npy shape overflows")?;
    }
    let want = start + count * width;
    if b.len() != want {
        return Err(format!(
            "its header says {count} ids of {width} bytes ({want} bytes in all) but the file is {} bytes",
            b.len()
        ));
    }
    Ok((start, width, count))
}

/// What a tokenizer cache's header records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheHeader {
    /// Number of u32 ids after the header.
    pub count: usize,
    /// SHA-256 of the text the ids came from.
    pub text_sha: [u8; 32],
    /// SHA-256 of the tokenizer's identity ([`super::Tokenizer::identity`]).
    pub tokenizer_sha: [u8; 32],
}

impl CacheHeader {
    /// The 128-byte header: magic, version 1, id width 4, count, the two
    /// hashes, zero padding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(CACHE_HEADER_BYTES);
        h.extend_from_slice(CACHE_MAGIC);
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&4u32.to_le_bytes());
        h.extend_from_slice(&(self.count as u64).to_le_bytes());
        h.extend_from_slice(&self.text_sha);
        h.extend_from_slice(&self.tokenizer_sha);
        h.resize(CACHE_HEADER_BYTES, 0);
        h
    }
}

/// The header of a cache file's bytes, checked against its length.
pub fn cache_header(b: &[u8]) -> std::result::Result<CacheHeader, String> {
    if b.len() < CACHE_HEADER_BYTES || !b.starts_with(CACHE_MAGIC) {
        return Err("it is not a complete headroom token cache".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if u32_at(8) != 1 || u32_at(12) != 4 {
        return Err("its token cache version is not 1; delete it to rebuild".into());
    }
    let mut c = [0u8; 8];
    c.copy_from_slice(&b[16..24]);
    let count = u64::from_le_bytes(c) as usize;
    if b.len() != CACHE_HEADER_BYTES + count * 4 {
        return Err(format!(
            "its header counts {count} tokens but the file is {} bytes; delete it to rebuild",
            b.len()
        ));
    }
    let mut text_sha = [0u8; 32];
    text_sha.copy_from_slice(&b[24..56]);
    let mut tokenizer_sha = [0u8; 32];
    tokenizer_sha.copy_from_slice(&b[56..88]);
    Ok(CacheHeader {
        count,
        text_sha,
        tokenizer_sha,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("headroom-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn llmc(version: i32, ids: &[u32]) -> Vec<u8> {
        let mut h = vec![0i32; 256];
        h[0] = LLMC_MAGIC;
        h[1] = version;
        h[2] = ids.len() as i32;
        let mut b: Vec<u8> = bytemuck::cast_slice(&h).to_vec();
        for &i in ids {
            match version {
                1 => b.extend_from_slice(&(i as u16).to_le_bytes()),
                _ => b.extend_from_slice(&i.to_le_bytes()),
            }
        }
        b
    }

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut dict =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        // numpy pads the header with spaces to a multiple of 64, ending in \n.
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn llmc_shards_of_both_versions_read_back() {
        for v in [1, 2] {
            let p = write(&format!("v{v}.bin"), &llmc(v, &[5, 0, 65535, 7]));
            let kind = sniff(&std::fs::read(&p).unwrap()).unwrap();
            assert_eq!(kind, TokenFile::Llmc);
            let t = open(&p, kind).unwrap();
            let ids: Vec<u32> = (0..t.len()).map(|i| t.get(i)).collect();
            assert_eq!(ids, [5, 0, 65535, 7]);
            assert_eq!(t.max_id(), 65535);
            assert_eq!(t.first_at_or_above(100), Some(2));
            assert_eq!(t.byte_offset(2), 1024 + 2 * (v as usize * 2));
        }
    }

    #[test]
    fn a_truncated_shard_is_refused() {
        let mut b = llmc(1, &[1, 2, 3]);
        b.pop();
        let p = write("cut.bin", &b);
        let e = open(&p, TokenFile::Llmc).err().unwrap();
        assert!(e.to_string().contains("counts 3 tokens"), "{e}");
    }

    #[test]
    fn npy_arrays_of_u16_and_u32_read_back() {
        let p = write("a.npy", &npy("<u2", "(3,)", &[1, 0, 2, 0, 0xff, 0xff]));
        let t = open(&p, TokenFile::Npy).unwrap();
        assert_eq!((0..3).map(|i| t.get(i)).collect::<Vec<_>>(), [1, 2, 65535]);
        let d: Vec<u8> = [9u32, 70000].iter().flat_map(|x| x.to_le_bytes()).collect();
        let p = write("b.npy", &npy("<u4", "(1, 2)", &d));
        let t = open(&p, TokenFile::Npy).unwrap();
        assert_eq!((0..2).map(|i| t.get(i)).collect::<Vec<_>>(), [9, 70000]);
        let p = write("c.npy", &npy("<f4", "(1,)", &[0; 4]));
        let e = open(&p, TokenFile::Npy).err().unwrap();
        assert!(e.to_string().contains("uint16 or uint32"), "{e}");
    }

    #[test]
    fn a_cache_header_round_trips_and_checks_its_length() {
        let h = CacheHeader {
            count: 2,
            text_sha: [1; 32],
            tokenizer_sha: [2; 32],
        };
        let mut b = h.to_bytes();
        b.extend_from_slice(&[3, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(cache_header(&b).unwrap(), h);
        b.pop();
        assert!(cache_header(&b).is_err());
    }
}
