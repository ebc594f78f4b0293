//! Folds and threads: which rows train and which test in each fold (a
//! `group_id` never straddles two), and the scoped thread pool that fits
//! algorithms and folds side by side. Training and `eval` share both, so a
//! row sits in the same fold whichever of them asks.

use migsight_proto::rng::Rng;

/// Runs `f` over `jobs` on up to `threads` threads; results in job order.
pub fn parallel_map<T: Sync, R: Send>(
    jobs: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: Vec<std::sync::Mutex<Option<R>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, jobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= jobs.len() {
                    break;
                }
                let r = f(&jobs[i]);
                *out[i].lock().unwrap() = Some(r);
            });
        }
    });
    out.into_iter()
        .map(|m| m.into_inner().unwrap().unwrap())
        .collect()
}

/// Deterministic fold of each row: groups (rows sharing a `group_id`) are
/// shuffled with the seed and dealt round-robin, so a group's rows share a fold.
pub fn assign_folds(groups: &[&str], k: usize, seed: u64) -> Vec<usize> {
    let mut uniq: Vec<&str> = groups.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let mut rng = Rng::derive(seed, &[0xF01D]);
    rng.shuffle(&mut uniq);
    let k = k.max(1);
    let fold_of: std::collections::HashMap<&str, usize> =
        uniq.iter().enumerate().map(|(i, g)| (*g, i % k)).collect();
    groups.iter().map(|g| fold_of[g]).collect()
}
