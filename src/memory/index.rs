//! Vector indexes over L2-normalised vectors, scored by inner product (cosine).
//!
//! Two implementations share one trait: exact search (the reference answer, and
//! the right choice for a few thousand vectors) and HNSW through `hnsw_rs`.

use std::path::Path;

use hnsw_rs::prelude::*;
use serde::{Deserialize, Serialize};

/// A scored hit: the item id and its similarity (inner product, higher is closer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: usize,
    pub score: f32,
}

/// Which index a memory uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    Exact,
    Hnsw,
}

/// HNSW graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Neighbours kept per node and layer (hnsw_rs's `max_nb_connection`, at most 255).
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl HnswParams {
    /// Echo's settings (its author's code: M=64, efConstruction 40, efSearch 16).
    pub const ECHO: HnswParams = HnswParams {
        m: 64,
        ef_construction: 40,
        ef_search: 16,
    };
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams::ECHO
    }
}

/// Nearest-neighbour search over a fixed set of vectors.
pub trait VectorIndex: Send + Sync {
    fn kind(&self) -> IndexKind;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `k` most similar vectors, best first.
    fn search(&self, query: &[f32], k: usize) -> Vec<Hit>;
}

/// Inner product, the hot loop of every search.
///
/// Written as sixteen independent lanes so the compiler can keep them in SIMD
/// registers (a single running sum forces sequential adds). On x86-64 the same
/// code is also compiled for AVX2 and picked at run time when the CPU has it,
/// which doubles the lane width over the SSE2 baseline.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX2: OnceLock<bool> = OnceLock::new();
        if *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2")) {
            // SAFETY: the CPU was just checked to support AVX2.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        sum += x * y;
    }
    sum
}

/// Brute force over all vectors: exact, and fast enough for tens of thousands.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactIndex {
    dim: usize,
    vectors: Vec<f32>,
}

impl ExactIndex {
    pub fn new(dim: usize, vectors: Vec<f32>) -> Self {
        ExactIndex { dim, vectors }
    }

    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Exact top-k restricted to `ids` (used for category scope).
    pub fn search_among(&self, query: &[f32], k: usize, ids: &[usize]) -> Vec<Hit> {
        top_k(
            ids.iter().filter_map(|&id| {
                let v = self.vectors.get(id * self.dim..(id + 1) * self.dim)?;
                Some(Hit {
                    id,
                    score: dot(query, v),
                })
            }),
            k,
        )
    }
}

impl VectorIndex for ExactIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Exact
    }
    fn len(&self) -> usize {
        self.vectors.len().checked_div(self.dim).unwrap_or(0)
    }
    fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        top_k(
            self.vectors
                .chunks_exact(self.dim.max(1))
                .enumerate()
                .map(|(id, v)| Hit {
                    id,
                    score: dot(query, v),
                }),
            k,
        )
    }
}

fn top_k(hits: impl Iterator<Item = Hit>, k: usize) -> Vec<Hit> {
    let mut best: Vec<Hit> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for h in hits {
        if best.len() == k && h.score <= best[k - 1].score {
            continue;
        }
        // Ties keep the lower id first, so results are deterministic.
        let pos =
            best.partition_point(|b| b.score > h.score || (b.score == h.score && b.id < h.id));
        best.insert(pos, h);
        best.truncate(k);
    }
    best
}

/// Cosine distance for unit vectors, `1 - dot`, clamped at 0 so rounding never
/// produces the negative distances that trip hnsw_rs's internal checks.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - dot(va, vb)).max(0.0)
    }
}

/// hnsw_rs's layer count; its dump format requires the full 16.
const MAX_LAYER: usize = 16;

/// An HNSW graph over the vectors.
pub struct HnswIndex {
    params: HnswParams,
    graph: Hnsw<'static, f32, UnitCosine>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("HNSW parameter M must be between 2 and 255, got {0}")]
    BadM(usize),
    #[error("cannot write the HNSW graph to {path}: {message}")]
    Dump { path: String, message: String },
    #[error("cannot read the HNSW graph in {path}: {message}")]
    Load { path: String, message: String },
}

impl HnswIndex {
    /// Builds the graph (insertion runs on all cores).
    pub fn build(dim: usize, vectors: &[f32], params: HnswParams) -> Result<Self, IndexError> {
        if !(2..=255).contains(&params.m) {
            return Err(IndexError::BadM(params.m));
        }
        let n = vectors.len().checked_div(dim).unwrap_or(0);
        let graph = Hnsw::new(
            params.m,
            n.max(1),
            MAX_LAYER,
            params.ef_construction,
            UnitCosine,
        );
        let items: Vec<(&[f32], usize)> = vectors.chunks_exact(dim.max(1)).zip(0..).collect();
        graph.parallel_insert_slice(&items);
        let mut graph = graph;
        graph.set_searching_mode(true);
        Ok(HnswIndex { params, graph })
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    /// Writes `<basename>.hnsw.graph` and `<basename>.hnsw.data` into `dir`.
    pub fn dump(&self, dir: &Path, basename: &str) -> Result<(), IndexError> {
        self.graph
            .file_dump(dir, basename)
            .map(|_| ())
            .map_err(|e| IndexError::Dump {
                path: dir.display().to_string(),
                message: e.to_string(),
            })
    }

    /// Reads a graph written by [`HnswIndex::dump`].
    ///
    /// hnsw_rs ties the graph's lifetime to its loader; the loader is a few hundred
    /// bytes (no data is memory-mapped), so it is leaked to get an owned graph.
    pub fn load(dir: &Path, basename: &str, params: HnswParams) -> Result<Self, IndexError> {
        let err = |message: String| IndexError::Load {
            path: dir.display().to_string(),
            message,
        };
        let mut io: Option<&'static mut HnswIo> =
            Some(Box::leak(Box::new(HnswIo::new(dir, basename))));
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // `take` hands over the `'static` borrow itself, so the graph may keep it.
            io.take().map(|io| io.load_hnsw::<f32, UnitCosine>())
        }));
        let mut graph = match loaded {
            Ok(Some(Ok(g))) => g,
            Ok(Some(Err(e))) => return Err(err(e.to_string())),
            Ok(None) => return Err(err("internal error: loader already used".into())),
            Err(_) => return Err(err("the graph files are damaged".into())),
        };
        graph.set_searching_mode(true);
        Ok(HnswIndex { params, graph })
    }

    /// Checks that the graph holds exactly the points `0..n`, each once, each of
    /// dimension `dim`: a search can then only return ids that name an item.
    pub fn check_points(&self, n: usize, dim: usize) -> Result<(), String> {
        let counted = self.graph.get_nb_point();
        if counted != n {
            return Err(format!("the graph holds {counted} points for {n} items"));
        }
        let indexation = self.graph.get_point_indexation();
        let mut seen = vec![false; n];
        let mut found = 0usize;
        // hnsw_rs keeps each point in exactly one layer, its top one.
        let walked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for layer in 0..MAX_LAYER {
                for point in indexation.get_layer_iterator(layer) {
                    let id = point.get_origin_id();
                    let len = point.get_v().len();
                    if len != dim {
                        return Err(format!("point {id} has {len} values, not {dim}"));
                    }
                    match seen.get_mut(id) {
                        Some(s) if !*s => *s = true,
                        Some(_) => return Err(format!("point {id} appears twice")),
                        None => return Err(format!("point {id} names no item (of {n})")),
                    }
                    found += 1;
                }
            }
            Ok(())
        }));
        match walked {
            Ok(Ok(())) if found == n => Ok(()),
            Ok(Ok(())) => Err(format!(
                "the graph's layers hold {found} points for {n} items"
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("its layers are inconsistent".into()),
        }
    }
}

impl VectorIndex for HnswIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Hnsw
    }
    fn len(&self) -> usize {
        self.graph.get_nb_point()
    }
    fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        if k == 0 || self.len() == 0 {
            return Vec::new();
        }
        let ef = self.params.ef_search.max(k);
        let mut hits: Vec<Hit> = self
            .graph
            .search(query, k, ef)
            .into_iter()
            .map(|n| Hit {
                id: n.d_id,
                score: 1.0 - n.distance,
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clustered unit vectors: `centres` random directions plus small noise.
    pub(crate) fn clustered(n: usize, dim: usize, centres: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut rnd = move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        let cs: Vec<f32> = (0..centres * dim).map(|_| rnd()).collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = &cs[(i % centres) * dim..(i % centres + 1) * dim];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.15 * rnd()).collect();
            crate::vision::l2_normalize(&mut v);
            out.extend(v);
        }
        out
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }

    #[test]
    fn exact_finds_itself_first_and_orders_scores() {
        let dim = 16;
        let v = clustered(200, dim, 10, 1);
        let idx = ExactIndex::new(dim, v.clone());
        for id in [0, 57, 199] {
            let hits = idx.search(&v[id * dim..(id + 1) * dim], 5);
            assert_eq!(hits[0].id, id);
            assert!((hits[0].score - 1.0).abs() < 1e-5);
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
        let among = idx.search_among(&v[0..dim], 3, &[5, 10, 20, 33]);
        assert_eq!(among[0].id, 10, "same cluster as id 0");
        assert!(idx.search(&v[0..dim], 0).is_empty());
    }

    #[test]
    fn hnsw_agrees_with_exact_on_clustered_data_and_survives_dump() {
        let dim = 32;
        let n = 2000;
        // Data and queries share cluster centres; queries are fresh noisy points.
        let all = clustered(n + 100, dim, 40, 7);
        let (v, queries) = all.split_at(n * dim);
        let v = v.to_vec();
        let exact = ExactIndex::new(dim, v.clone());
        let hnsw = HnswIndex::build(dim, &v, HnswParams::ECHO).unwrap();
        assert_eq!(hnsw.len(), n);
        let agree = queries
            .chunks_exact(dim)
            .filter(|q| hnsw.search(q, 1)[0].id == exact.search(q, 1)[0].id)
            .count();
        assert!(agree >= 97, "recall@1 {agree}/100");
        let dir = tempfile::tempdir().unwrap();
        hnsw.dump(dir.path(), "g").unwrap();
        let back = HnswIndex::load(dir.path(), "g", HnswParams::ECHO).unwrap();
        for q in queries.chunks_exact(dim).take(20) {
            assert_eq!(back.search(q, 3), hnsw.search(q, 3));
        }
        assert!(
            HnswIndex::build(
                dim,
                &v,
                HnswParams {
                    m: 300,
                    ..HnswParams::ECHO
                }
            )
            .is_err()
        );
        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join("g.hnsw.graph"), b"garbage").unwrap();
        std::fs::write(bad.path().join("g.hnsw.data"), b"garbage").unwrap();
        assert!(HnswIndex::load(bad.path(), "g", HnswParams::ECHO).is_err());
    }
}
