//! The one median of migsight: the lab's report, the trainer's robust
//! statistics (GBDT leaves under L1 loss, medians of residuals and labels)
//! and the benchmarks all mean the same thing by it.

/// The median of `v` (the mean of the two middle values for an even count),
/// `None` when empty; NaN orders after every number (`f64::total_cmp`).
///
/// Reorders `v` in place: O(n) selection rather than a sort, because the
/// trainer takes the median of every L1 leaf's residuals (pass a copy where
/// the order matters).
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let odd = v.len() % 2 == 1;
    let mid = v.len() / 2;
    let (lower, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if odd {
        return Some(m);
    }
    // The largest of the lower half is the other middle value.
    let lo = lower.iter().copied().max_by(f64::total_cmp).unwrap_or(m);
    Some((lo + m) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn odd_even_empty_and_nan() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0]), Some(3.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [-1.0, -1.0, 5.0, 5.0]), Some(2.0));
        assert_eq!(median(&mut [f64::NAN, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn agrees_with_a_sort() {
        let mut r = crate::rng::Rng::new(9);
        for n in 1..200 {
            let v: Vec<f64> = (0..n).map(|_| (r.below(50) as f64) - 20.0).collect();
            let mut s = v.clone();
            s.sort_by(f64::total_cmp);
            let want = if n % 2 == 1 {
                s[n / 2]
            } else {
                (s[n / 2 - 1] + s[n / 2]) / 2.0
            };
            assert_eq!(median(&mut v.clone()), Some(want), "{v:?}");
        }
    }
}
