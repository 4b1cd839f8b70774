//! `edge-auth-fuzz`: a mutational fuzzer on stable Rust for the targets in
//! [`targets`]. No coverage instrumentation (that needs nightly and libFuzzer's C++):
//! instead each target names the *outcome* an input led to, and inputs that reach a new
//! outcome join the corpus, so mutations build on inputs that got further.
//!
//! ```text
//! edge-auth-fuzz [TARGET|all] [--seconds N] [--seed N]
//! edge-auth-fuzz TARGET --replay FILE
//! ```
//!
//! Starts from `tests/fuzz/corpus/<target>/`, runs each target for N seconds (default
//! 10), and on a panic writes the input to `target/fuzz-artifacts/<target>-<n>.bin`,
//! prints it in hex (the binary targets read raw length bytes, which text would mangle)
//! and exits 1. Without `--seed` each run draws a new seed, so runs explore different
//! inputs; every report names its seed, and the same seed replays the same inputs.
//! `--replay` runs one saved input (an artifact, or one rebuilt from the printed hex).
//!
//! # Layout
//! - `targets.rs`: the targets and the properties they check.
//! - `main.rs`: the driver: corpus, mutations, crash artifacts.

mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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

/// The seed inputs in `dir`, with their files.
fn load_corpus(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the corpus {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            Ok((f, bytes))
        })
        .collect()
}

/// Where a run reads its corpus and writes what crashes.
#[derive(Clone)]
struct Dirs {
    corpus: PathBuf,
    artifacts: PathBuf,
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

/// `bytes` in lower-case hex: how a crashing input is printed, so that the log alone
/// rebuilds it (`xxd -r -p`).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A seed for a run not given one: the clock, so that each CI run explores new inputs.
fn fresh_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_nanos() % u128::from(u64::MAX)).unwrap_or(0x5eed)
        ^ u64::from(std::process::id())
}

/// What a run found.
struct Report {
    runs: u64,
    outcomes: usize,
    corpus: usize,
}

/// How long one input may run before the run stops as hung: every target is a parser
/// that answers in microseconds, so an input still running after this loops.
const HANG_AFTER: Duration = Duration::from_secs(10);

/// What the fuzzing thread shows the thread that watches it for a hang.
#[derive(Default)]
struct Progress {
    /// Inputs started so far.
    started: AtomicU64,
    /// The input running now (copied in before it runs).
    input: Mutex<Vec<u8>>,
    /// Set when the watcher gives up on a hung input: the fuzzing thread stops at its
    /// next input, if it ever gets there.
    stop: AtomicBool,
}

impl Progress {
    /// Shows `input` as the one running now; `false` once the watcher has given up (the
    /// input is then not run).
    fn start(&self, input: &[u8]) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let mut current = self.input.lock().unwrap_or_else(PoisonError::into_inner);
        current.clear();
        current.extend_from_slice(input);
        drop(current);
        self.started.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Fuzzes `target` for `seconds` on a thread of its own and watches it: an input that
/// runs longer than `hang_after` is saved and reported like a panic (a hang would
/// otherwise stall CI until its job limit).
fn fuzz(
    target: &'static Target,
    dirs: &Dirs,
    seconds: u64,
    seed: u64,
    hang_after: Duration,
) -> anyhow::Result<Report> {
    let progress = Arc::new(Progress::default());
    let worker = {
        let (progress, dirs) = (Arc::clone(&progress), dirs.clone());
        std::thread::spawn(move || fuzz_on(target, &dirs, seconds, seed, &progress))
    };
    let (mut seen, mut since) = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20).min(hang_after));
        if worker.is_finished() {
            return worker
                .join()
                .unwrap_or_else(|_| bail!("{}: the fuzzing thread died", target.name));
        }
        let started = progress.started.load(Ordering::Relaxed);
        if started != seen {
            (seen, since) = (started, Instant::now());
        } else if since.elapsed() > hang_after {
            progress.stop.store(true, Ordering::Relaxed);
            let input = progress
                .input
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let file = save_artifact(dirs, target, started, &input)?;
            bail!(
                "{}: input {started} still running after {hang_after:?} (--seed {seed})\n  input ({} bytes) written to {}\n  hex: {}",
                target.name,
                input.len(),
                file.display(),
                hex(&input)
            );
        }
    }
}

/// Writes a crashing or hanging input where the report says.
fn save_artifact(dirs: &Dirs, target: &Target, n: u64, input: &[u8]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&dirs.artifacts)?;
    let file = dirs.artifacts.join(format!("{}-{n}.bin", target.name));
    std::fs::write(&file, input)?;
    Ok(file)
}

/// The fuzzing itself: the corpus first, then mutations until the deadline.
fn fuzz_on(
    target: &Target,
    dirs: &Dirs,
    seconds: u64,
    seed: u64,
    progress: &Progress,
) -> anyhow::Result<Report> {
    let mut seen = std::collections::HashSet::new();
    let mut corpus = Vec::new();
    for (file, input) in load_corpus(&dirs.corpus.join(target.name))? {
        if !progress.start(&input) {
            bail!("{}: stopped", target.name);
        }
        match run_one(target, &input) {
            Ok(outcome) => {
                seen.insert(outcome);
            }
            Err(message) => bail!(
                "{}: the corpus input {} panics: {message}",
                target.name,
                file.display()
            ),
        }
        corpus.push(input);
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
            if !progress.start(&input) {
                bail!("{}: stopped", target.name);
            }
            match run_one(target, &input) {
                Ok(outcome) => {
                    if seen.insert(outcome) && corpus.len() < 4096 {
                        corpus.push(input);
                    }
                }
                Err(message) => {
                    let file = save_artifact(dirs, target, runs, &input)?;
                    bail!(
                        "{}: panic after {runs} runs (--seed {seed}): {message}\n  input ({} bytes) written to {}\n  hex: {}",
                        target.name,
                        input.len(),
                        file.display(),
                        hex(&input)
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
    let mut seed = None;
    let mut replay = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "--seed" => seed = Some(args.next().context("--seed N")?.parse()?),
            "--replay" => replay = Some(PathBuf::from(args.next().context("--replay FILE")?)),
            "-h" | "--help" => {
                println!("edge-auth-fuzz [TARGET|all] [--seconds N] [--seed N]");
                println!("edge-auth-fuzz TARGET --replay FILE");
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
    if let Some(file) = replay {
        let [target] = chosen[..] else {
            bail!("--replay needs one target, not {which:?}");
        };
        let input = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        return match run_one(target, &input) {
            Ok(outcome) => {
                println!("{}: no panic (outcome {outcome:#x})", target.name);
                Ok(())
            }
            Err(message) => bail!("{}: panic: {message}", target.name),
        };
    }
    std::panic::set_hook(Box::new(|_| {}));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dirs = Dirs {
        corpus: root.join("corpus"),
        artifacts: root.join("../../target/fuzz-artifacts"),
    };
    let seed = seed.unwrap_or_else(fresh_seed);
    println!("seed {seed} (--seed {seed} replays this run)");
    for target in chosen {
        let report = fuzz(target, &dirs, seconds, seed, HANG_AFTER)?;
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
            for (_, input) in &corpus {
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

    /// Fuzzes `target` from the one seed input `fine` with seed 42 until it fails; the
    /// report, and the input it printed in hex.
    fn first_failure(target: &'static Target, hang_after: Duration) -> (String, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!(
            "edge-auth-fuzz-{}-{}",
            target.name,
            std::process::id()
        ));
        let dirs = Dirs {
            corpus: dir.join("corpus"),
            artifacts: dir.join("artifacts"),
        };
        let seeds = dirs.corpus.join(target.name);
        std::fs::create_dir_all(&seeds).expect("a corpus dir");
        std::fs::write(seeds.join("seed.bin"), b"fine").expect("a seed");
        let found = fuzz(target, &dirs, 5, 42, hang_after)
            .err()
            .expect("a failure found");
        let message = format!("{found:#}");
        let hex_line = message
            .lines()
            .find_map(|line| line.trim().strip_prefix("hex: "))
            .expect("the input in hex");
        let bytes: Vec<u8> = (0..hex_line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex_line[i..i + 2], 16).expect("hex"))
            .collect();
        let saved = std::fs::read_dir(&dirs.artifacts)
            .expect("an artifact written")
            .map(|f| std::fs::read(f.expect("an artifact").path()).expect("its bytes"))
            .collect::<Vec<_>>();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(saved, std::slice::from_ref(&bytes), "{message}");
        (message, bytes)
    }

    #[test]
    fn a_crash_found_by_fuzzing_is_saved_and_printed_in_hex_with_its_seed() {
        // Review finding (stop 42): the input was printed as lossy UTF-8, which mangles
        // the raw length bytes the binary targets read, and the seed was not printed.
        fn fragile(bytes: &[u8]) -> u64 {
            assert!(!bytes.contains(&0x9f), "found the byte");
            0
        }
        static FRAGILE: Target = Target {
            name: "fragile",
            run: fragile,
        };
        let (message, input) = first_failure(&FRAGILE, HANG_AFTER);
        assert!(message.contains("--seed 42"), "{message}");
        assert!(message.contains("found the byte"), "{message}");
        assert!(input.contains(&0x9f), "{message}");
    }

    #[test]
    fn an_input_that_hangs_its_target_is_saved_and_reported_instead_of_stalling_the_run() {
        // A parser stuck in a loop would otherwise hold CI until its job limit. (The
        // stand-in sleeps a while rather than forever, so its thread ends with the test.)
        // The limit leaves room for a loaded CI machine to deschedule the thread a while.
        fn sticky(bytes: &[u8]) -> u64 {
            if bytes.contains(&0x9f) {
                std::thread::sleep(Duration::from_secs(4));
            }
            0
        }
        static STICKY: Target = Target {
            name: "sticky",
            run: sticky,
        };
        let (message, input) = first_failure(&STICKY, Duration::from_millis(1500));
        assert!(message.contains("still running after 1.5s"), "{message}");
        assert!(message.contains("--seed 42"), "{message}");
        assert!(input.contains(&0x9f), "{message}");
    }
}
