//! bpe-openai vs tiktoken-rs: MiB/s on the 1 MiB mixed text of the tokenizer bench,
//! single-threaded, best and median of 10 runs, outputs checked equal; then the
//! pathological 1 MiB inputs, whitespace run last (tiktoken-rs may not survive it).

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const RUNS: usize = 10;

fn mixed_text() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../crates/core/tests/fixtures/tokenizer/corpus.jsonl"
    );
    let corpus = std::fs::read_to_string(path).expect("corpus fixture");
    let texts: Vec<String> = corpus
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|v| !v["name"].as_str().unwrap_or("").starts_with("repeat-100k/"))
        .map(|v| v["text"].as_str().unwrap_or("").to_string())
        .collect();
    let unit = texts.join("\n");
    let mut s = String::new();
    while s.len() < MIB {
        s.push_str(&unit);
        s.push('\n');
    }
    let mut end = MIB;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

fn no_spaces() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

fn measure(bytes: usize, runs: usize, mut f: impl FnMut() -> usize) -> (f64, f64, usize) {
    let n = f(); // warm-up
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    let mibs = |d: Duration| bytes as f64 / MIB as f64 / d.as_secs_f64();
    (mibs(times[0]), mibs(times[times.len() / 2]), n)
}

fn main() {
    let text = mixed_text();
    println!(
        "mixed text: {} bytes; best / median of {RUNS} runs, MiB/s",
        text.len()
    );
    let bpe = [
        ("o200k_base", bpe_openai::o200k_base()),
        ("cl100k_base", bpe_openai::cl100k_base()),
    ];
    let tik = [
        tiktoken_rs::o200k_base_singleton(),
        tiktoken_rs::cl100k_base_singleton(),
    ];
    for ((name, ours), theirs) in bpe.iter().zip(tik) {
        assert_eq!(
            ours.encode(&text),
            theirs.encode_ordinary(&text),
            "{name}: ids differ"
        );
        let (b1, m1, n) = measure(text.len(), RUNS, || ours.encode(&text).len());
        let (b2, m2, _) = measure(text.len(), RUNS, || theirs.encode_ordinary(&text).len());
        println!(
            "{name}: {n} tokens; bpe-openai {b1:.1} / {m1:.1}; tiktoken-rs {b2:.1} / {m2:.1}; ratio {:.2}x",
            b1 / b2
        );
    }
    println!("pathological 1 MiB inputs (best of 3, MiB/s):");
    let cases = [
        ("one-char-a", "a".repeat(MIB)),
        ("no-spaces", no_spaces()),
        ("whitespace-run", " ".repeat(MIB)),
    ];
    for (case, input) in &cases {
        for ((name, ours), theirs) in bpe.iter().zip(tik) {
            let (b1, _, _) = measure(MIB, 3, || ours.encode(input).len());
            print!("  {case} {name}: bpe-openai {b1:.1}; ");
            std::io::stdout().flush().ok();
            let input = input.clone();
            let r = std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn(move || {
                    std::panic::catch_unwind(|| {
                        measure(MIB, 3, || theirs.encode_ordinary(&input).len())
                    })
                })
                .expect("thread")
                .join();
            match r {
                Ok(Ok((b2, _, _))) => println!("tiktoken-rs {b2:.1}; ratio {:.1}x", b1 / b2),
                _ => println!("tiktoken-rs panicked"),
            }
        }
    }
}
