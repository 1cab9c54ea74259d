//! A code-point-exact port of the part of CPython 3.11's `difflib` that MMAD's
//! evaluation scripts use: `SequenceMatcher(None, a, b)` (no junk function,
//! `autojunk=True`) and `get_close_matches`.
//!
//! MMAD falls back to `get_close_matches(reply, option_texts, n=1, cutoff=0.0)`
//! when a reply contains no standalone letter, so reproducing its scores
//! requires reproducing difflib's quirks exactly: the "popular element"
//! heuristic for sequences of 200+ elements, the order in which
//! `find_longest_match` breaks ties, and the `(ratio, string)` ordering of
//! `heapq.nlargest`. Sequences are compared element by element on Unicode
//! code points, as Python does for `str`.

use std::collections::HashMap;

/// A matching block: `a[a..a + size] == b[b..b + size]`.
///
/// Field order matters: the derived `Ord` sorts like Python's tuple
/// `(i, j, k)`, which `get_matching_blocks` relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    pub a: usize,
    pub b: usize,
    pub size: usize,
}

/// Compares two code-point sequences the way `difflib.SequenceMatcher` does.
///
/// Like CPython, everything that depends only on `b` (the index of where
/// each element occurs, the popular elements, the element counts) is
/// computed once when `b` is set, so one matcher can score a fixed `b`
/// against many `a`s cheaply (see [`SequenceMatcher::set_seq1`]).
#[derive(Debug, Clone)]
pub struct SequenceMatcher {
    a: Vec<char>,
    b: Vec<char>,
    /// For each element of `b` that is not popular, the ascending positions
    /// where it occurs in `b` (CPython's `b2j`).
    b2j: HashMap<char, Vec<usize>>,
    /// How often each element occurs in `b`, popular ones included
    /// (CPython's `fullbcount`, which `quick_ratio` needs).
    full_b_count: HashMap<char, usize>,
}

impl SequenceMatcher {
    /// `SequenceMatcher(None, a, b)` with `autojunk=True`.
    pub fn new(a: &str, b: &str) -> Self {
        let mut matcher = Self {
            a: a.chars().collect(),
            b: Vec::new(),
            b2j: HashMap::new(),
            full_b_count: HashMap::new(),
        };
        matcher.set_seq2(b);
        matcher
    }

    /// Replaces `a`, keeping everything computed from `b`.
    pub fn set_seq1(&mut self, a: &str) {
        self.a = a.chars().collect();
    }

    /// Replaces `b` and rebuilds the tables derived from it.
    pub fn set_seq2(&mut self, b: &str) {
        self.b = b.chars().collect();
        self.chain_b();
    }

    /// CPython's `__chain_b`: index `b`, then drop "popular" elements.
    ///
    /// With `isjunk=None` there is no junk set. The autojunk heuristic treats
    /// an element as popular when `b` has at least 200 elements and the
    /// element occurs more than `len(b) / 100 + 1` times; popular elements
    /// are removed from `b2j`, so they can never seed a match, only extend
    /// one (see [`SequenceMatcher::find_longest_match`]).
    fn chain_b(&mut self) {
        let mut b2j: HashMap<char, Vec<usize>> = HashMap::new();
        let mut full_b_count: HashMap<char, usize> = HashMap::new();
        for (j, &elt) in self.b.iter().enumerate() {
            b2j.entry(elt).or_default().push(j);
            *full_b_count.entry(elt).or_default() += 1;
        }
        let n = self.b.len();
        if n >= 200 {
            let ntest = n / 100 + 1;
            b2j.retain(|_, positions| positions.len() <= ntest);
        }
        self.b2j = b2j;
        self.full_b_count = full_b_count;
    }

    /// The longest matching block in `a[alo..ahi]` and `b[blo..bhi]`.
    ///
    /// Among equally long blocks, the one starting earliest in `a` wins, then
    /// the one starting earliest in `b`. When nothing matches the result is
    /// `(alo, blo, 0)`. Out-of-range bounds are clamped instead of panicking.
    pub fn find_longest_match(&self, alo: usize, ahi: usize, blo: usize, bhi: usize) -> Match {
        let (a, b) = (&self.a, &self.b);
        let ahi = ahi.min(a.len());
        let bhi = bhi.min(b.len());
        let (mut besti, mut bestj, mut bestsize) = (alo, blo, 0usize);

        // j2len[j] is the length of the longest match ending with a[i - 1]
        // and b[j]; only the previous row is needed, so two maps are swapped.
        let mut j2len: HashMap<usize, usize> = HashMap::new();
        let mut new_j2len: HashMap<usize, usize> = HashMap::new();
        for (i, elt) in a.iter().enumerate().take(ahi).skip(alo) {
            new_j2len.clear();
            if let Some(positions) = self.b2j.get(elt) {
                for &j in positions {
                    if j < blo {
                        continue;
                    }
                    if j >= bhi {
                        break;
                    }
                    let previous = j
                        .checked_sub(1)
                        .and_then(|p| j2len.get(&p))
                        .copied()
                        .unwrap_or(0);
                    let k = previous + 1;
                    new_j2len.insert(j, k);
                    if k > bestsize {
                        besti = i + 1 - k;
                        bestj = j + 1 - k;
                        bestsize = k;
                    }
                }
            }
            std::mem::swap(&mut j2len, &mut new_j2len);
        }

        // Popular elements are absent from b2j but are not junk, so CPython's
        // first pair of extension loops grows the block over equal elements
        // of any kind on both sides. This is also how a block made only of
        // popular elements is found, starting from (alo, blo, 0). CPython's
        // second pair of loops extends over junk only, and with isjunk=None
        // the junk set is empty, so those loops never run and are omitted.
        while besti > alo && bestj > blo && a[besti - 1] == b[bestj - 1] {
            besti -= 1;
            bestj -= 1;
            bestsize += 1;
        }
        while besti + bestsize < ahi
            && bestj + bestsize < bhi
            && a[besti + bestsize] == b[bestj + bestsize]
        {
            bestsize += 1;
        }

        Match {
            a: besti,
            b: bestj,
            size: bestsize,
        }
    }

    /// All matching blocks, ascending, adjacent blocks merged, ending with
    /// the sentinel `(len(a), len(b), 0)`.
    ///
    /// Recomputed on each call; CPython caches it, which is unobservable.
    pub fn get_matching_blocks(&self) -> Vec<Match> {
        let (la, lb) = (self.a.len(), self.b.len());

        // CPython uses a list as a stack (append/pop at the end); the visiting
        // order does not affect the result because the blocks are sorted.
        let mut queue = vec![(0, la, 0, lb)];
        let mut blocks = Vec::new();
        while let Some((alo, ahi, blo, bhi)) = queue.pop() {
            let found = self.find_longest_match(alo, ahi, blo, bhi);
            let (i, j, k) = (found.a, found.b, found.size);
            if k > 0 {
                blocks.push(found);
                if alo < i && blo < j {
                    queue.push((alo, i, blo, j));
                }
                if i + k < ahi && j + k < bhi {
                    queue.push((i + k, ahi, j + k, bhi));
                }
            }
        }
        blocks.sort_unstable();

        let mut merged = Vec::with_capacity(blocks.len() + 1);
        let mut current = Match {
            a: 0,
            b: 0,
            size: 0,
        };
        for block in blocks {
            if current.a + current.size == block.a && current.b + current.size == block.b {
                current.size += block.size;
            } else {
                if current.size > 0 {
                    merged.push(current);
                }
                current = block;
            }
        }
        if current.size > 0 {
            merged.push(current);
        }
        merged.push(Match {
            a: la,
            b: lb,
            size: 0,
        });
        merged
    }

    /// `2 * M / T`, where `M` is the number of matched elements and `T` the
    /// total number of elements in both sequences.
    pub fn ratio(&self) -> f64 {
        let matches = self.get_matching_blocks().iter().map(|m| m.size).sum();
        calculate_ratio(matches, self.a.len() + self.b.len())
    }

    /// An upper bound on [`SequenceMatcher::ratio`]: the size of the
    /// multiset intersection of `a` and `b`, ignoring order.
    pub fn quick_ratio(&self) -> f64 {
        let mut avail: HashMap<char, isize> = HashMap::new();
        let mut matches = 0;
        for elt in &self.a {
            let numb = match avail.get(elt) {
                Some(&left) => left,
                None => self
                    .full_b_count
                    .get(elt)
                    .map_or(0, |&count| isize::try_from(count).unwrap_or(isize::MAX)),
            };
            avail.insert(*elt, numb - 1);
            if numb > 0 {
                matches += 1;
            }
        }
        calculate_ratio(matches, self.a.len() + self.b.len())
    }

    /// A cheaper, looser upper bound: as if every element of the shorter
    /// sequence matched.
    pub fn real_quick_ratio(&self) -> f64 {
        let (la, lb) = (self.a.len(), self.b.len());
        calculate_ratio(la.min(lb), la + lb)
    }
}

/// CPython's `_calculate_ratio`: `2.0 * matches / length`, and 1.0 for two
/// empty sequences. The operations are done in the same order, in `f64`,
/// so results are bit-identical to Python's.
fn calculate_ratio(matches: usize, length: usize) -> f64 {
    if length == 0 {
        1.0
    } else {
        2.0 * matches as f64 / length as f64
    }
}

/// `difflib.get_close_matches(word, possibilities, n, cutoff)`.
///
/// As in CPython, `word` is the matcher's `b` (indexed once, subject to the
/// autojunk heuristic when it has 200+ code points) and each possibility is
/// its `a`. Candidates pass when `real_quick_ratio`, `quick_ratio` and
/// `ratio` are all `>= cutoff`; the best `n` are returned by descending
/// `(ratio, possibility)`, so equal ratios go to the larger string in code
/// point order (Rust's byte order on UTF-8 is the same order).
///
/// CPython raises `ValueError` for `n == 0` or a cutoff outside `[0, 1]`;
/// here `n == 0` returns nothing and the cutoff is used as given (a NaN
/// cutoff therefore rejects everything), so the function never panics.
pub fn get_close_matches<'a>(
    word: &str,
    possibilities: &[&'a str],
    n: usize,
    cutoff: f64,
) -> Vec<&'a str> {
    if n == 0 {
        return Vec::new();
    }
    let mut matcher = SequenceMatcher::new("", word);
    let mut scored: Vec<(f64, &'a str)> = Vec::new();
    for &candidate in possibilities {
        matcher.set_seq1(candidate);
        if matcher.real_quick_ratio() >= cutoff && matcher.quick_ratio() >= cutoff {
            let ratio = matcher.ratio();
            if ratio >= cutoff {
                scored.push((ratio, candidate));
            }
        }
    }
    // heapq.nlargest(n, ...) == sorted(..., reverse=True)[:n].
    scored.sort_by(|x, y| y.0.total_cmp(&x.0).then_with(|| y.1.cmp(x.1)));
    scored.into_iter().take(n).map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Produced by `scripts/gen_difflib_cases.py` with CPython 3.11.
    const FIXTURE: &str = include_str!("../../tests/fixtures/difflib_cases.json");

    #[derive(Deserialize)]
    struct Fixture {
        pairs: Vec<PairCase>,
        close: Vec<CloseCase>,
    }

    #[derive(Deserialize)]
    struct PairCase {
        a: String,
        b: String,
        ratio: f64,
        ratio_bits: u64,
        quick_ratio_bits: u64,
        real_quick_ratio_bits: u64,
        longest: [usize; 3],
        blocks: Vec<[usize; 3]>,
    }

    #[derive(Deserialize)]
    struct CloseCase {
        word: String,
        possibilities: Vec<String>,
        n: usize,
        cutoff: f64,
        result: Vec<String>,
    }

    fn fixture() -> Fixture {
        serde_json::from_str(FIXTURE).expect("fixture parses")
    }

    fn triple(m: Match) -> [usize; 3] {
        [m.a, m.b, m.size]
    }

    #[test]
    fn fixture_is_large_enough() {
        let f = fixture();
        assert!(f.pairs.len() + f.close.len() >= 300);
        assert!(f.pairs.iter().any(|c| c.b.chars().count() >= 200));
        assert!(f.close.iter().any(|c| c.word.chars().count() >= 200));
    }

    #[test]
    fn pairs_match_cpython_exactly() {
        for case in fixture().pairs {
            let m = SequenceMatcher::new(&case.a, &case.b);
            let ctx = format!("a={:?} b={:?}", case.a, case.b);
            let la = case.a.chars().count();
            let lb = case.b.chars().count();
            assert_eq!(
                triple(m.find_longest_match(0, la, 0, lb)),
                case.longest,
                "{ctx}"
            );
            let blocks: Vec<[usize; 3]> = m.get_matching_blocks().into_iter().map(triple).collect();
            assert_eq!(blocks, case.blocks, "{ctx}");
            assert_eq!(
                m.ratio().to_bits(),
                case.ratio_bits,
                "{ctx} ratio {}",
                case.ratio
            );
            assert_eq!(m.quick_ratio().to_bits(), case.quick_ratio_bits, "{ctx}");
            assert_eq!(
                m.real_quick_ratio().to_bits(),
                case.real_quick_ratio_bits,
                "{ctx}"
            );
        }
    }

    #[test]
    fn close_matches_match_cpython_exactly() {
        for case in fixture().close {
            let possibilities: Vec<&str> = case.possibilities.iter().map(String::as_str).collect();
            let got = get_close_matches(&case.word, &possibilities, case.n, case.cutoff);
            assert_eq!(
                got, case.result,
                "word={:?} possibilities={:?}",
                case.word, possibilities
            );
        }
    }

    #[test]
    fn docstring_examples() {
        let m = SequenceMatcher::new("abcd", "bcde");
        assert_eq!(m.ratio(), 0.75);
        assert_eq!(m.quick_ratio(), 0.75);
        assert_eq!(m.real_quick_ratio(), 1.0);
        let m = SequenceMatcher::new(" abcd", "abcd abcd");
        assert_eq!(triple(m.find_longest_match(0, 5, 0, 9)), [0, 4, 5]);
        let m = SequenceMatcher::new("ab", "c");
        assert_eq!(triple(m.find_longest_match(0, 2, 0, 1)), [0, 0, 0]);
        let blocks: Vec<_> = SequenceMatcher::new("abxcd", "abcd")
            .get_matching_blocks()
            .into_iter()
            .map(triple)
            .collect();
        assert_eq!(blocks, vec![[0, 0, 2], [3, 2, 2], [5, 4, 0]]);
        assert_eq!(
            get_close_matches("appel", &["ape", "apple", "peach", "puppy"], 3, 0.6),
            vec!["apple", "ape"]
        );
    }

    #[test]
    fn empty_sequences_have_ratio_one() {
        let m = SequenceMatcher::new("", "");
        assert_eq!(m.ratio(), 1.0);
        assert_eq!(m.quick_ratio(), 1.0);
        assert_eq!(m.real_quick_ratio(), 1.0);
    }

    #[test]
    fn ties_go_to_the_larger_string() {
        assert_eq!(
            get_close_matches("abc", &["abd", "xbc", "abe"], 1, 0.0),
            vec!["xbc"]
        );
    }

    #[test]
    fn degenerate_arguments_do_not_panic() {
        assert!(get_close_matches("a", &["a"], 0, 0.0).is_empty());
        assert!(get_close_matches("a", &["a"], 1, f64::NAN).is_empty());
        assert!(get_close_matches("a", &[], 1, 0.0).is_empty());
        let m = SequenceMatcher::new("abc", "abc");
        assert_eq!(triple(m.find_longest_match(5, 9, 7, 2)), [5, 7, 0]);
        assert_eq!(triple(m.find_longest_match(0, 99, 0, 99)), [0, 0, 3]);
    }

    #[test]
    fn autojunk_popular_elements_only_extend_matches() {
        // 200 'a's: every element is popular, so b2j is empty and the whole
        // match is found by extending from (0, 0, 0).
        let s = "a".repeat(200);
        let m = SequenceMatcher::new(&s, &s);
        assert_eq!(triple(m.find_longest_match(0, 200, 0, 200)), [0, 0, 200]);
        // An 'x' in front of a: nothing seeds a match and (0, 0) differs.
        let a = format!("x{s}");
        let m = SequenceMatcher::new(&a, &s);
        assert_eq!(m.ratio(), 0.0);
    }
}
