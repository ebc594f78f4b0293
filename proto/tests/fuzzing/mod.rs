//! The fuzzing driver shared by the fuzz targets (`proto/tests/fuzz.rs`,
//! `predictor/tests/fuzz.rs`): proptest strategies run against a time
//! budget instead of a case count, and byte-level mutations of seeds.
#![allow(dead_code)]

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};
use std::time::{Duration, Instant};

/// The time budget of one target: `MIGSIGHT_FUZZ_SECONDS` (default 3).
pub fn budget() -> Duration {
    let secs = std::env::var("MIGSIGHT_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Runs `test` on inputs drawn from `strategy` until the budget is spent;
/// a failure (an assertion or a panic) is shrunk to a minimal input and
/// fails the test. Returns the number of inputs tried.
pub fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) -> u64 {
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let budget = budget();
    let deadline = Instant::now() + budget;
    let mut n = 0u64;
    while n == 0 || Instant::now() < deadline {
        let case = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{name}: cannot generate an input: {e}"));
        if let Err(e) = runner.run_one(case, &test) {
            panic!("{name}: {e}");
        }
        n += 1;
    }
    eprintln!("fuzz {name}: {n} inputs in {budget:?}, all handled");
    n
}

/// One mutation: (kind, position, value); positions wrap around the input.
pub type Op = (u8, usize, u8);

/// Seeds with a few mutations each.
pub struct Mutations;

impl Mutations {
    pub fn of(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = (Vec<u8>, Vec<Op>)> {
        let n = seeds.len();
        (
            0..n,
            proptest::collection::vec(
                (0u8..6, proptest::num::usize::ANY, proptest::num::u8::ANY),
                1..8,
            ),
        )
            .prop_map(move |(i, ops)| (seeds[i].clone(), ops))
    }
}

/// `seed` after `ops`: bit flips, overwrites (also with bytes that matter
/// to the formats: 0, 0xff, 0x7f, 0x80, newline, comma, quote),
/// insertions, deletions and truncation.
pub fn mutated(seed: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for &(kind, pos, val) in ops {
        let at = if b.is_empty() { 0 } else { pos % b.len() };
        match kind {
            0 if !b.is_empty() => b[at] ^= 1 << (val % 8),
            1 if !b.is_empty() => b[at] = val,
            2 => b.insert(at, val),
            3 if !b.is_empty() => {
                b.remove(at);
            }
            4 => b.truncate(at),
            5 if !b.is_empty() => {
                b[at] = [0u8, 0xff, 0x7f, 0x80, b'\n', b',', b'"'][val as usize % 7];
            }
            _ => {}
        }
    }
    b
}
