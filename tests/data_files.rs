//! Data beyond bytes: GPT-2's BPE offline, the token cache next to a text
//! (used when fresh, rebuilt when stale), llm.c shards and `.npy` arrays
//! mapped and validated, and split by fraction or by file.

use std::path::PathBuf;

use headroom::data::tokenizer::cache_path;
use headroom::data::tokens::LLMC_MAGIC;
use headroom::data::{Dataset, Split, Tokenizer};
use headroom::rng::Rng;
use headroom::Error;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("headroom-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An llm.c shard (version 1: u16 ids) of `ids`.
fn shard(ids: &[u16]) -> Vec<u8> {
    let mut h = vec![0i32; 256];
    h[0] = LLMC_MAGIC;
    h[1] = 1;
    h[2] = ids.len() as i32;
    let mut b: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
    b.extend(ids.iter().flat_map(|x| x.to_le_bytes()));
    b
}

#[test]
fn gpt2_bpe_works_offline_and_round_trips() {
    let tok = Tokenizer::from_arg("gpt2").unwrap();
    assert_eq!(tok.vocab_size(), 50257);
    // GPT-2's well-known ids for "Hello world".
    assert_eq!(tok.encode("t", b"Hello world").unwrap(), [15496, 995]);
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.";
    let ids: Vec<i32> = tok
        .encode("t", text.as_bytes())
        .unwrap()
        .into_iter()
        .map(|i| i as i32)
        .collect();
    assert_eq!(tok.decode(&ids), text);
    let e = tok.encode("bad.txt", &[b'a', 0xff, b'b']).unwrap_err();
    assert!(e.to_string().contains("not UTF-8 at byte 1"), "{e}");
}

#[test]
fn a_bpe_text_is_cached_next_to_it_and_a_stale_cache_is_rebuilt() {
    let d = dir("cache");
    let text = d.join("input.txt");
    let body = "It is a truth universally acknowledged, that a single man. ".repeat(40);
    std::fs::write(&text, &body).unwrap();
    let tok = Tokenizer::from_arg("gpt2").unwrap();
    let first = Dataset::open(&text, &tok).unwrap();
    let cache = cache_path(&text, &tok);
    assert!(cache.exists(), "{} was not written", cache.display());
    assert_eq!(
        std::fs::read_to_string(&text).unwrap(),
        body,
        "the text is never written"
    );
    let again = Dataset::open(&text, &tok).unwrap();
    assert_eq!(first.fingerprint(), again.fingerprint());
    assert_eq!(first.len(Split::Train), again.len(Split::Train));
    // The second open read the cache: an id changed in it shows.
    let mut bytes = std::fs::read(&cache).unwrap();
    bytes[128] ^= 1;
    std::fs::write(&cache, &bytes).unwrap();
    let from_cache = Dataset::open(&text, &tok).unwrap();
    assert_ne!(from_cache.fingerprint(), first.fingerprint());
    // Another text under the same name: the cache's hash no longer matches.
    std::fs::write(&text, body.replace("man", "woman")).unwrap();
    let edited = Dataset::open(&text, &tok).unwrap();
    assert_ne!(edited.fingerprint(), first.fingerprint());
    let fresh = Dataset::from_tokens(
        "x",
        headroom::data::Tokens::Ids(
            tok.encode("x", std::fs::read(&text).unwrap().as_slice())
                .unwrap(),
        ),
        "gpt2",
    )
    .unwrap();
    assert_eq!(edited.fingerprint(), fresh.fingerprint());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_llmc_shard_is_read_as_tokens_and_batches_follow_it() {
    let d = dir("shard");
    let ids: Vec<u16> = (0..1000).map(|i| (i * 7 % 50000) as u16).collect();
    let p = d.join("train.bin");
    std::fs::write(&p, shard(&ids)).unwrap();
    let data = Dataset::open(&p, &Tokenizer::Bytes).unwrap();
    assert_eq!(data.tokenizer, "token file");
    assert_eq!(data.len(Split::Train) + data.len(Split::Val), 1000);
    assert_eq!(data.max_id(), 999 * 7);
    data.check_vocab(50257).unwrap();
    let b = data.batch(Split::Train, &mut Rng::new(1), 2, 8).unwrap();
    let (tokens, targets) = (b.ids("tokens"), b.ids("targets"));
    // Each window is consecutive ids of the file, targets one ahead.
    let start = ids.iter().position(|&x| x as i32 == tokens[0]).unwrap();
    let want: Vec<i32> = ids[start..start + 9].iter().map(|&x| x as i32).collect();
    assert_eq!(&tokens[..8], &want[..8]);
    assert_eq!(&targets[..8], &want[1..9]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_id_past_the_vocabulary_is_a_typed_error_naming_its_offset() {
    let d = dir("range");
    let mut ids: Vec<u16> = vec![3; 500];
    ids[321] = 300;
    let p = d.join("bad.bin");
    std::fs::write(&p, shard(&ids)).unwrap();
    let data = Dataset::open(&p, &Tokenizer::Bytes).unwrap();
    match data.check_vocab(256).unwrap_err() {
        Error::TokenOutOfRange {
            index,
            byte_offset,
            id,
            vocab,
            ..
        } => {
            assert_eq!((index, byte_offset, id, vocab), (321, 1024 + 642, 300, 256));
        }
        e => panic!("{e}"),
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_validation_file_replaces_the_held_out_tenth() {
    let d = dir("val");
    let (t, v) = (d.join("train.bin"), d.join("val.bin"));
    std::fs::write(&t, shard(&[1; 400])).unwrap();
    std::fs::write(&v, shard(&[2; 100])).unwrap();
    let data = Dataset::open(&t, &Tokenizer::Bytes)
        .unwrap()
        .with_val(Dataset::open(&v, &Tokenizer::Bytes).unwrap());
    assert_eq!((data.len(Split::Train), data.len(Split::Val)), (400, 100));
    let b = data.batch(Split::Val, &mut Rng::new(1), 1, 8).unwrap();
    assert_eq!(b.ids("tokens"), [2; 8]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_bad_tokenizer_argument_says_what_is_accepted() {
    let e = Tokenizer::from_arg("sentencepiece").unwrap_err();
    assert!(e.to_string().contains("bytes, gpt2"), "{e}");
    let e = Tokenizer::from_arg("/nonexistent/tokenizer.json").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn gpt2_bpe_of_the_bundled_text_matches_tiktoken() {
    // From Python: tiktoken.get_encoding("gpt2").encode_ordinary(text),
    // tiktoken 0.14.0 (benches/reference/llmc_shard.py prints both).
    let tok = Tokenizer::from_arg("gpt2").unwrap();
    let ids = tok
        .encode("tinyshakespeare", headroom::data::TINY_SHAKESPEARE)
        .unwrap();
    assert_eq!(ids.len(), 338_025);
    assert_eq!(
        ids[..20],
        [
            5962, 22307, 25, 198, 8421, 356, 5120, 597, 2252, 11, 3285, 502, 2740, 13, 198, 198,
            3237, 25, 198, 5248
        ]
    );
}

#[test]
fn a_hugging_face_tokenizer_json_gives_pythons_ids_and_is_cached_by_its_hash() {
    // tests/fixtures/tokenizer_tiny.json, made by make_fixtures.py; the ids
    // are what Python's tokenizers 0.23.3 gave for this text.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer_tiny.json"
    );
    let tok = Tokenizer::from_arg(path).unwrap();
    assert_eq!(tok.vocab_size(), 300);
    let text = "First Citizen:\nBefore we proceed";
    let ids = tok.encode("t", text.as_bytes()).unwrap();
    assert_eq!(
        ids,
        [
            37, 72, 81, 296, 220, 34, 270, 72, 89, 279, 25, 198, 33, 68, 69, 78, 262, 261, 68, 284,
            81, 78, 66, 68, 68, 67
        ]
    );
    let back: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    assert_eq!(tok.decode(&back), text);
    // Its cache is named by the file's hash, apart from GPT-2's.
    let d = dir("hfcache");
    let text_path = d.join("t.txt");
    std::fs::write(&text_path, text.repeat(10)).unwrap();
    let data = Dataset::open(&text_path, &tok).unwrap();
    assert_eq!(
        data.len(Split::Train) + data.len(Split::Val),
        ids.len() * 10
    );
    let gpt2 = Tokenizer::from_arg("gpt2").unwrap();
    assert_ne!(cache_path(&text_path, &tok), cache_path(&text_path, &gpt2));
    assert!(cache_path(&text_path, &tok).exists());
    std::fs::remove_dir_all(&d).unwrap();
}
