//! The measurements behind the README's performance figures, each runnable from
//! `echo-workbench bench ...` (and all of them from `scripts/bench.sh`): vector
//! indexes and memory builds ([`index`]), the batch runner against the bound an
//! endpoint allows ([`runner`]), journals at scale ([`journal`]), CLIP
//! throughput ([`clip`]) and the anomaly map's speed ([`anomaly`]), each with
//! the CPU it ran on ([`cpu`]). Nothing in the app depends on this module.

pub mod anomaly;
pub mod clip;
pub mod cpu;
pub mod index;
pub mod journal;
pub mod runner;

/// The median of `times` (sorted in place), the mean of the middle two for an
/// even count; 0 for none. A benchmark reports it beside or instead of a mean
/// because one pass slowed by a neighbour on the machine moves a mean, not a
/// median.
pub fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    match times.len() {
        0 => 0.0,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_takes_the_middle_and_ignores_one_slow_pass() {
        assert_eq!(super::median(&mut []), 0.0);
        assert_eq!(super::median(&mut [3.0, 1.0, 100.0]), 3.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 2.0, 100.0]), 3.0);
    }
}
