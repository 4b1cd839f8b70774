//! `edge-auth-fuzz`: a mutational fuzzer on stable Rust for the targets in
//! [`targets`]. No coverage instrumentation (that needs nightly and libFuzzer's C++):
//! instead each target names the *outcome* an input led to, and inputs that reach a new
//! outcome join the corpus, so mutations build on inputs that got further.
//!
//! ```text
//! edge-auth-fuzz [TARGET|all] [--seconds N] [--seed N]
//! ```
//!
//! Starts from `tests/fuzz/corpus/<target>/`, runs each target for N seconds (default
//! 10), and on a panic writes the input to `target/fuzz-artifacts/<target>-<n>.bin`,
//! prints it, and exits 1. The same seed replays the same inputs.
//!
//! # Layout
//! - `targets.rs`: the targets and the properties they check.
//! - `main.rs`: the driver: corpus, mutations, crash artifacts.

mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use targets::{TARGETS, Target};

/// xorshift64*: fast, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

/// Tokens the parsers care about, spliced in whole.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"true",
    b"1e999",
    b"-1",
    b"18446744073709551616",
    b"4294967296",
    b"@",
    b".",
    b"..",
    b"=",
    b"==",
    b"+",
    b"/",
    b"-",
    b"_",
    b" ",
    b"\t",
    b"\n",
    b"\xff",
    b"\xc3\xa9",
    b"\xe2\x80\xae",
    b"\xf0\x9f\x92\xa9",
    b"s_",
    b"c_",
    b"u_",
    b"0000000000000000",
    b"\"protocol_version\":",
    b"\"envelope\":",
    b"\"payload\":",
    b"\"signature\":",
    b"\"message_type\":",
    b"\"request_id\":",
    b"\"timestamp_ms\":",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(8) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = u8::try_from(rng.below(256)).unwrap_or(0);
            }
            2 => input.insert(at, u8::try_from(rng.below(256)).unwrap_or(0)),
            3 if !input.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            4 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            5 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(32)).min(input.len());
                let chunk = input[start..end].to_vec();
                input.splice(at..at, chunk);
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => input.truncate(at),
        }
    }
    input.truncate(64 * 1024);
}

/// The seed inputs of `target`.
fn load_corpus(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the corpus {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).with_context(|| format!("reading {}", f.display())))
        .collect()
}

/// Runs `input` through `target`; the panic message when it panics.
fn run_one(target: &Target, input: &[u8]) -> Result<u64, String> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "a panic".into())
    })
}

/// What a run found.
struct Report {
    runs: u64,
    outcomes: usize,
    corpus: usize,
}

fn fuzz(target: &Target, root: &Path, seconds: u64, seed: u64) -> anyhow::Result<Report> {
    let mut corpus = load_corpus(&root.join("corpus").join(target.name))?;
    let mut seen = std::collections::HashSet::new();
    for input in &corpus {
        match run_one(target, input) {
            Ok(outcome) => {
                seen.insert(outcome);
            }
            Err(message) => bail!("{}: a corpus input panics: {message}", target.name),
        }
    }
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let mut input = corpus
                .get(rng.below(corpus.len()))
                .cloned()
                .unwrap_or_default();
            mutate(&mut rng, &mut input, &corpus);
            runs += 1;
            match run_one(target, &input) {
                Ok(outcome) => {
                    if seen.insert(outcome) && corpus.len() < 4096 {
                        corpus.push(input);
                    }
                }
                Err(message) => {
                    let dir = root.join("../../target/fuzz-artifacts");
                    std::fs::create_dir_all(&dir)?;
                    let file = dir.join(format!("{}-{runs}.bin", target.name));
                    std::fs::write(&file, &input)?;
                    bail!(
                        "{}: panic after {runs} runs: {message}\n  input ({} bytes) written to {}: {:?}",
                        target.name,
                        input.len(),
                        file.display(),
                        String::from_utf8_lossy(&input)
                    );
                }
            }
        }
    }
    Ok(Report {
        runs,
        outcomes: seen.len(),
        corpus: corpus.len(),
    })
}

fn main() -> anyhow::Result<()> {
    let mut which = "all".to_string();
    let mut seconds = 10;
    let mut seed = 0x5eed;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "--seed" => seed = args.next().context("--seed N")?.parse()?,
            "-h" | "--help" => {
                println!("edge-auth-fuzz [TARGET|all] [--seconds N] [--seed N]");
                println!(
                    "targets: {}",
                    TARGETS
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(());
            }
            name => which = name.to_string(),
        }
    }
    let chosen: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| which == "all" || t.name == which)
        .collect();
    if chosen.is_empty() {
        bail!("no target {which:?}; see --help");
    }
    // Panics are caught and reported with their input; the default hook's message for
    // each would drown the report.
    std::panic::set_hook(Box::new(|_| {}));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for target in chosen {
        let report = fuzz(target, &root, seconds, seed)?;
        println!(
            "{:<10} {:>10} runs in {seconds} s, {:>4} outcomes, corpus {}",
            target.name, report.runs, report.outcomes, report.corpus
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_corpus_input_runs_through_its_target_without_a_panic() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        for target in &TARGETS {
            let corpus = load_corpus(&root.join("corpus").join(target.name)).expect("corpus");
            assert!(!corpus.is_empty(), "{} has a corpus", target.name);
            for input in &corpus {
                (target.run)(input);
            }
        }
    }

    #[test]
    fn a_target_that_panics_is_reported_with_its_input() {
        fn fragile(bytes: &[u8]) -> u64 {
            assert!(!bytes.contains(&b'!'), "found the bang");
            0
        }
        let target = Target {
            name: "fragile",
            run: fragile,
        };
        assert_eq!(run_one(&target, b"fine"), Ok(0));
        assert!(run_one(&target, b"bang!").is_err_and(|m| m.contains("found the bang")));
    }
}
