//! Writes the small synthetic `Sample` dataset in MMAD layout: the dataset Echo Workbench
//! opens on a machine without the real benchmark, and the one the tests use.
//!
//! Usage: `cargo run --release --example make_sample -- [OUT_DIR]` (default `assets/sample`).
//!
//! Output: `OUT_DIR/mmad.json` and `OUT_DIR/Sample/<category>/{train,test,ground_truth}/...`
//! for three categories (`washer`, `weave`, `chip`), each with 8 train/good images, 4
//! test/good images and 3 test images per defect type with binary masks.
//!
//! Every image is drawn procedurally and every random choice comes from a small PRNG
//! seeded by the image's path, so the output is byte-identical on every run and platform:
//! only IEEE basic arithmetic, `sqrt`, `floor` and `round` are used (sine and cosine are
//! computed here by series instead of by the platform's maths library), and nothing
//! depends on hash-map iteration order.

use std::fs;
use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use serde_json::{Map, Value};

const SIZE: usize = 256;
const DATASET: &str = "Sample";
const TRAIN_GOOD: usize = 8;
const TEST_GOOD: usize = 4;
const TEST_PER_DEFECT: usize = 3;
const TAU: f64 = std::f64::consts::TAU;

// ------------------------------------------------------------------------------------
// Deterministic randomness
// ------------------------------------------------------------------------------------

/// SplitMix64.
struct Rng(u64);

fn fnv1a(s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    fn from_key(key: &str) -> Rng {
        Rng(fnv1a(key))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn sign(&mut self) -> f64 {
        if self.chance(0.5) { 1.0 } else { -1.0 }
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

// ------------------------------------------------------------------------------------
// Small maths and drawing helpers
// ------------------------------------------------------------------------------------

/// Sine and cosine by Taylor series after reduction to [-pi, pi]; platform independent.
fn sin_cos(x: f64) -> (f64, f64) {
    let x = x - TAU * (x / TAU).round();
    let x2 = x * x;
    let (mut s, mut c) = (0.0, 0.0);
    let (mut ts, mut tc) = (x, 1.0);
    for k in 0..20 {
        s += ts;
        c += tc;
        let n = (2 * k + 2) as f64;
        ts *= -x2 / (n * (n + 1.0));
        tc *= -x2 / ((n - 1.0) * n);
    }
    (s, c)
}

fn clamp01(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}

fn smoothstep(e0: f64, e1: f64, x: f64) -> f64 {
    let t = clamp01((x - e0) / (e1 - e0));
    t * t * (3.0 - 2.0 * t)
}

/// Antialiased coverage of a pixel from a signed distance (negative inside), in pixels.
fn cov(d: f64) -> f64 {
    clamp01(0.5 - d)
}

type Rgb = [f64; 3];

/// A point in pixels.
type Pt = (f64, f64);

/// A straight stroke: end points and width.
type Stroke = (Pt, Pt, f64);

fn mix(a: Rgb, b: Rgb, t: f64) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale(a: Rgb, k: f64) -> Rgb {
    [a[0] * k, a[1] * k, a[2] * k]
}

fn tint(a: Rgb, t: Rgb, amount: f64) -> Rgb {
    [
        a[0] * (1.0 + (t[0] - 1.0) * amount),
        a[1] * (1.0 + (t[1] - 1.0) * amount),
        a[2] * (1.0 + (t[2] - 1.0) * amount),
    ]
}

fn len2(x: f64, y: f64) -> f64 {
    (x * x + y * y).sqrt()
}

/// Distance from (px, py) to the segment a-b, and the position along it in [0, 1].
fn seg_dist(px: f64, py: f64, a: Pt, b: Pt) -> (f64, f64) {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let (wx, wy) = (px - a.0, py - a.1);
    let l2 = vx * vx + vy * vy;
    let t = if l2 > 0.0 {
        clamp01((wx * vx + wy * vy) / l2)
    } else {
        0.0
    };
    (len2(wx - vx * t, wy - vy * t), t)
}

/// Signed distance to an axis-aligned rectangle centred at the origin with rounded corners.
fn round_rect_sd(u: f64, v: f64, hw: f64, hh: f64, r: f64) -> f64 {
    let qx = u.abs() - (hw - r);
    let qy = v.abs() - (hh - r);
    len2(qx.max(0.0), qy.max(0.0)) + qx.max(qy).min(0.0) - r
}

/// Hash of a lattice point to [0, 1).
fn lattice(ix: i64, iy: i64, seed: u64) -> f64 {
    let h = mix64(
        seed ^ (ix as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (iy as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
    );
    (h >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// Smooth value noise in [0, 1], lattice spacing 1.
fn vnoise(x: f64, y: f64, seed: u64) -> f64 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i64, fy as i64);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = lattice(ix, iy, seed);
    let b = lattice(ix + 1, iy, seed);
    let c = lattice(ix, iy + 1, seed);
    let d = lattice(ix + 1, iy + 1, seed);
    a + (b - a) * sx + (c - a) * sy + (a - b - c + d) * sx * sy
}

/// Signed noise in about [-1, 1]: value noise at zero mean.
fn snoise(x: f64, y: f64, seed: u64) -> f64 {
    vnoise(x, y, seed) * 2.0 - 1.0
}

/// A few octaves of signed value noise, normalised to about [-1, 1].
fn fbm(x: f64, y: f64, seed: u64, octaves: u32) -> f64 {
    let (mut sum, mut amp, mut freq, mut total) = (0.0, 1.0, 1.0, 0.0);
    for o in 0..octaves {
        sum += amp * snoise(x * freq, y * freq, seed.wrapping_add(u64::from(o) * 7919));
        total += amp;
        amp *= 0.5;
        freq *= 2.0;
    }
    sum / total
}

/// An irregular round shape: a circle whose radius wobbles with direction.
struct Blob {
    cx: f64,
    cy: f64,
    r: f64,
    wobble: f64,
    fray: f64,
    seed: u64,
}

impl Blob {
    /// Radius in the direction of the unit vector (ux, uy).
    fn radius_at(&self, ux: f64, uy: f64) -> f64 {
        let n1 = snoise(ux * 1.5 + 7.13, uy * 1.5 + 3.71, self.seed);
        let n2 = snoise(ux * 6.0 + 1.37, uy * 6.0 + 9.29, self.seed ^ 0x55);
        self.r * (1.0 + self.wobble * n1 + self.fray * n2)
    }
    /// Approximate signed distance (negative inside).
    fn sd(&self, x: f64, y: f64) -> f64 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let d = len2(dx, dy);
        if d < 1e-9 {
            return -self.r;
        }
        d - self.radius_at(dx / d, dy / d)
    }
}

/// A polyline with a bounding box for quick rejection.
struct Polyline {
    pts: Vec<Pt>,
    cum: Vec<f64>,
    min: Pt,
    max: Pt,
}

impl Polyline {
    fn new(pts: Vec<Pt>) -> Polyline {
        let mut cum = vec![0.0];
        let mut min = pts[0];
        let mut max = pts[0];
        for w in pts.windows(2) {
            let last = *cum.last().unwrap_or(&0.0);
            cum.push(last + len2(w[1].0 - w[0].0, w[1].1 - w[0].1));
        }
        for p in &pts {
            min = (min.0.min(p.0), min.1.min(p.1));
            max = (max.0.max(p.0), max.1.max(p.1));
        }
        Polyline { pts, cum, min, max }
    }
    /// Quadratic Bezier curve from p0 to p2 with control point p1.
    fn bezier(p0: Pt, p1: Pt, p2: Pt, steps: usize) -> Polyline {
        let pts = (0..=steps)
            .map(|i| {
                let t = i as f64 / steps as f64;
                let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * (1.0 - t) * t, t * t);
                (
                    a * p0.0 + b * p1.0 + c * p2.0,
                    a * p0.1 + b * p1.1 + c * p2.1,
                )
            })
            .collect();
        Polyline::new(pts)
    }
    /// Distance to the polyline and the arc length of the nearest point; far points
    /// (beyond `reach` outside the bounding box) report infinity.
    fn dist(&self, x: f64, y: f64, reach: f64) -> (f64, f64) {
        if x < self.min.0 - reach
            || y < self.min.1 - reach
            || x > self.max.0 + reach
            || y > self.max.1 + reach
        {
            return (f64::INFINITY, 0.0);
        }
        let mut best = (f64::INFINITY, 0.0);
        for (i, w) in self.pts.windows(2).enumerate() {
            let (d, t) = seg_dist(x, y, w[0], w[1]);
            if d < best.0 {
                best = (d, self.cum[i] + t * (self.cum[i + 1] - self.cum[i]));
            }
        }
        best
    }
}

/// One rendered image: RGB bytes, the defect mask (0/255) for defect images and, where
/// the drawing varies in a way worth naming (colour, side), a sentence describing it that
/// replaces the defect's default description.
struct Rendered {
    rgb: Vec<u8>,
    mask: Option<Vec<u8>>,
    description: Option<String>,
}

fn to_byte(v: f64) -> u8 {
    (v + 0.5).floor().clamp(0.0, 255.0) as u8
}

/// Runs `shade(x, y) -> (colour, in_mask)` on every pixel centre.
fn render(
    defect: bool,
    description: Option<String>,
    shade: impl Fn(f64, f64) -> (Rgb, bool),
) -> Rendered {
    let mut rgb = Vec::with_capacity(SIZE * SIZE * 3);
    let mut mask = Vec::with_capacity(SIZE * SIZE);
    for py in 0..SIZE {
        for px in 0..SIZE {
            let (c, m) = shade(px as f64 + 0.5, py as f64 + 0.5);
            rgb.extend(c.iter().map(|&v| to_byte(v)));
            mask.push(if m { 255 } else { 0 });
        }
    }
    Rendered {
        rgb,
        mask: defect.then_some(mask),
        description,
    }
}

// ------------------------------------------------------------------------------------
// washer: light-grey metal ring on a dark background
// ------------------------------------------------------------------------------------

fn render_washer(rng: &mut Rng, defect: Option<&str>, variant: usize) -> Rendered {
    let cx = 128.0 + rng.range(-4.0, 4.0);
    let cy = 128.0 + rng.range(-4.0, 4.0);
    let ro = rng.range(88.0, 93.0);
    let ri = rng.range(40.0, 44.0);
    let bright = rng.range(0.93, 1.06);
    let bg_level = rng.range(34.0, 44.0);
    // Unit vector pointing towards the light (upper left).
    let (ly, lx) = sin_cos(rng.range(-2.6, -2.1));
    let tex = rng.next_u64();
    let bg_seed = rng.next_u64();

    let mut scratch: Option<(Stroke, Rgb)> = None;
    let mut notch: Option<(f64, f64, f64)> = None;
    let mut stain: Option<(Blob, Rgb, f64)> = None;
    let mut description = None;
    match defect {
        Some("scratch") => {
            let (s, c) = sin_cos(rng.range(0.0, TAU));
            let rad = rng.range(ri + 14.0, ro - 14.0);
            let (mx, my) = (cx + rad * c, cy + rad * s);
            let (ds, dc) = sin_cos(rng.range(-0.6, 0.6));
            let (tx, ty) = (-s, c);
            let (dx, dy) = (tx * dc - ty * ds, tx * ds + ty * dc);
            let half = rng.range(16.0, 30.0);
            let width = rng.range(1.4, 2.2);
            let bright_line = variant.is_multiple_of(2);
            let colour = if bright_line {
                [238.0, 238.0, 240.0]
            } else {
                [62.0, 60.0, 58.0]
            };
            scratch = Some((
                (
                    (mx - dx * half, my - dy * half),
                    (mx + dx * half, my + dy * half),
                    width,
                ),
                colour,
            ));
            description = Some(format!(
                "A thin {} straight line runs across the metal surface of the ring.",
                if bright_line { "bright" } else { "dark" }
            ));
        }
        Some("notch") => {
            let (s, c) = sin_cos(rng.range(0.0, TAU));
            let rb = rng.range(9.0, 15.0);
            let d = ro + rb * rng.range(0.05, 0.35);
            notch = Some((cx + d * c, cy + d * s, rb));
        }
        Some("stain") => {
            let (s, c) = sin_cos(rng.range(0.0, TAU));
            let rad = (ri + ro) / 2.0 + rng.range(-6.0, 6.0);
            let blob = Blob {
                cx: cx + rad * c,
                cy: cy + rad * s,
                r: rng.range(10.0, 17.0),
                wobble: 0.3,
                fray: 0.08,
                seed: rng.next_u64(),
            };
            let colour = [
                rng.range(0.66, 0.74),
                rng.range(0.48, 0.54),
                rng.range(0.28, 0.34),
            ];
            stain = Some((blob, colour, rng.range(0.7, 0.85)));
        }
        _ => {}
    }
    let (sx, sy) = (-lx * 6.0, -ly * 6.0);

    render(defect.is_some(), description, |x, y| {
        // Background with a soft gradient and the washer's shadow.
        let g = ((x - 128.0) * lx + (y - 128.0) * ly) / 181.0;
        let mut bg_l = bg_level * (1.0 + 0.35 * g) + 3.0 * fbm(x / 48.0, y / 48.0, bg_seed, 2);
        let (sdx, sdy) = (x - cx - sx, y - cy - sy);
        let sr = len2(sdx, sdy);
        let shadow = 1.0 - smoothstep(-3.0, 7.0, (ri - sr).max(sr - ro));
        bg_l *= 1.0 - 0.5 * shadow;
        let bg = [bg_l, bg_l, bg_l * 1.06];

        let (dx, dy) = (x - cx, y - cy);
        let r = len2(dx, dy);
        let d_ring = (ri - r).max(r - ro);
        let mut d_metal = d_ring;
        let mut bite_d = f64::INFINITY;
        if let Some((nx, ny, rb)) = notch {
            bite_d = len2(x - nx, y - ny) - rb;
            d_metal = d_metal.max(-bite_d);
        }
        let c = cov(d_metal);
        let mut in_mask = false;
        if let Some((nx, ny, rb)) = notch {
            in_mask = len2(x - nx, y - ny) <= rb + 1.0 && d_ring <= 1.0;
        }
        if c <= 0.0 {
            return (bg, in_mask);
        }
        let (nx, ny) = (dx / r, dy / r);
        let lam = (dx * lx + dy * ly) / ro;
        let mut l = 168.0 * bright * (1.0 + 0.13 * lam);
        // Turned / brushed texture: concentric streaks plus a gentle mottle.
        l += 4.0 * snoise(r * 0.6, 3.3, tex) + 1.5 * snoise(r * 2.1, 7.7, tex ^ 1);
        l += 2.5 * fbm(dx / 30.0, dy / 30.0, tex ^ 2, 2);
        // Bevelled edges catch or lose the light.
        let k_out = 1.0 - smoothstep(0.0, 3.5, ro - r);
        let k_in = 1.0 - smoothstep(0.0, 3.0, r - ri);
        l += 45.0 * k_out * (nx * lx + ny * ly);
        l -= 35.0 * k_in * (nx * lx + ny * ly);
        if bite_d.is_finite() {
            l *= 0.8 + 0.2 * smoothstep(0.0, 3.0, bite_d);
        }
        let mut metal = [l * 0.98, l, l * 1.03];
        if let Some((blob, colour, strength)) = &stain {
            let sd = blob.sd(x, y);
            let soft = clamp01(-sd / 3.0 + 0.5);
            let mottle = 0.75 + 0.25 * vnoise(x / 4.0, y / 4.0, blob.seed ^ 9);
            metal = tint(metal, *colour, soft * mottle * strength);
            in_mask = sd <= 1.5 && c > 0.5;
        }
        if let Some(((a, b, w), colour)) = scratch {
            let (d, _) = seg_dist(x, y, a, b);
            let cs = cov(d - w / 2.0);
            metal = mix(
                metal,
                colour,
                0.9 * cs + 0.12 * (1.0 - smoothstep(0.0, 2.5, d - w / 2.0)) * (1.0 - cs),
            );
            in_mask = d <= w / 2.0 + 2.0 && c > 0.5;
        }
        (mix(bg, metal, c), in_mask)
    })
}

// ------------------------------------------------------------------------------------
// weave: tan plain-woven fabric
// ------------------------------------------------------------------------------------

const STAIN_TINTS: [(&str, Rgb); 4] = [
    ("reddish-brown", [0.80, 0.55, 0.42]),
    ("greenish", [0.70, 0.86, 0.56]),
    ("dark grey", [0.60, 0.60, 0.64]),
    ("bluish", [0.64, 0.72, 0.92]),
];

fn render_weave(rng: &mut Rng, defect: Option<&str>, variant: usize) -> Rendered {
    let p = rng.range(15.0, 16.5);
    let (rs, rc) = sin_cos(rng.range(-0.03, 0.03));
    let (ou, ov) = (rng.range(0.0, p), rng.range(0.0, p));
    let bright = rng.range(0.94, 1.05);
    let warp = scale([206.0, 182.0, 140.0], bright);
    let weft = scale([194.0, 168.0, 126.0], bright);
    let gap = scale([78.0, 62.0, 45.0], bright);
    let seed = rng.next_u64();
    let half = 0.40 * p;

    let mut hole: Option<(Blob, Vec<Stroke>)> = None;
    let mut stain: Option<(Blob, Rgb, f64)> = None;
    let mut thread: Option<(Polyline, f64, Rgb)> = None;
    let mut description = None;
    match defect {
        Some("hole") => {
            let blob = Blob {
                cx: rng.range(36.0, 220.0),
                cy: rng.range(36.0, 220.0),
                r: rng.range(12.0, 19.0),
                wobble: 0.22,
                fray: 0.12,
                seed: rng.next_u64(),
            };
            let n = 12 + rng.below(6);
            let mut fibres = Vec::new();
            for k in 0..n {
                let (s, c) = sin_cos(TAU * (k as f64 + rng.range(-0.3, 0.3)) / n as f64);
                let rr = blob.radius_at(c, s);
                let len = rng.range(3.0, 7.0);
                let (s2, c2) = sin_cos(rng.range(-0.5, 0.5));
                let (ex, ey) = (-(c * c2 - s * s2), -(c * s2 + s * c2));
                let a = (blob.cx + (rr + 1.5) * c, blob.cy + (rr + 1.5) * s);
                fibres.push((a, (a.0 + ex * len, a.1 + ey * len), rng.range(1.1, 1.6)));
            }
            hole = Some((blob, fibres));
        }
        Some("stain") => {
            let blob = Blob {
                cx: rng.range(46.0, 210.0),
                cy: rng.range(46.0, 210.0),
                r: rng.range(20.0, 32.0),
                wobble: 0.28,
                fray: 0.06,
                seed: rng.next_u64(),
            };
            let (name, colour) = STAIN_TINTS[variant % STAIN_TINTS.len()];
            stain = Some((blob, colour, rng.range(0.7, 0.9)));
            description = Some(format!(
                "An irregular {name} patch discolours several threads of the weave."
            ));
        }
        Some("loose_thread") => {
            let (p0, p2) = loop {
                let a = (rng.range(24.0, 232.0), rng.range(24.0, 232.0));
                let b = (rng.range(24.0, 232.0), rng.range(24.0, 232.0));
                let l = len2(b.0 - a.0, b.1 - a.1);
                if (95.0..=175.0).contains(&l) {
                    break (a, b);
                }
            };
            let l = len2(p2.0 - p0.0, p2.1 - p0.1);
            let bend = rng.sign() * rng.range(0.18, 0.35) * l;
            let (nx, ny) = (-(p2.1 - p0.1) / l, (p2.0 - p0.0) / l);
            let p1 = (
                (p0.0 + p2.0) / 2.0 + nx * bend,
                (p0.1 + p2.1) / 2.0 + ny * bend,
            );
            let lighter = variant.is_multiple_of(2);
            let colour = if lighter {
                scale([236.0, 222.0, 190.0], bright)
            } else {
                scale([160.0, 122.0, 84.0], bright)
            };
            thread = Some((
                Polyline::bezier(p0, p1, p2, 40),
                rng.range(3.6, 4.6),
                colour,
            ));
            description = Some(format!(
                "A single stray thread, {} than the weave, curves across the fabric surface.",
                if lighter { "lighter" } else { "darker" }
            ));
        }
        _ => {}
    }

    render(defect.is_some(), description, |x, y| {
        let (lx, ly) = (x - 128.0, y - 128.0);
        let u = rc * lx + rs * ly + ou;
        let v = -rs * lx + rc * ly + ov;
        let (i, j) = ((u / p).floor(), (v / p).floor());
        let fu = u - (i + 0.5) * p;
        let fv = v - (j + 0.5) * p;
        let (i, j) = (i as i64, j as i64);
        let warp_top = (i + j) & 1 == 0;
        let tu = (fu / half).clamp(-1.0, 1.0);
        let tv = (fv / half).clamp(-1.0, 1.0);
        let warp_var = 1.0 + 0.05 * (lattice(i, 17, seed) * 2.0 - 1.0);
        let weft_var = 1.0 + 0.05 * (lattice(31, j, seed ^ 1) * 2.0 - 1.0);
        // Fibre streaks run along each thread and change from one crossing to the next
        // (kept one-dimensional inside a crossing so that the PNG stays small).
        let warp_fib = 1.0 + 0.06 * snoise(u * 0.3, j as f64 * 3.7, seed ^ 2);
        let weft_fib = 1.0 + 0.06 * snoise(i as f64 * 3.7, v * 0.3, seed ^ 3);
        let warp_c = scale(warp, (0.70 + 0.30 * (1.0 - tu * tu)) * warp_var * warp_fib);
        let weft_c = scale(weft, (0.70 + 0.30 * (1.0 - tv * tv)) * weft_var * weft_fib);
        let gap_c = scale(gap, 0.85 + 0.3 * vnoise(x / 9.0, y / 9.0, seed ^ 4));
        let (warp_cov, weft_cov) = (cov(fu.abs() - half), cov(fv.abs() - half));
        let (bot_c, bot_cov, top_c, top_cov, top_edge) = if warp_top {
            (weft_c, weft_cov, warp_c, warp_cov, fu.abs() - half)
        } else {
            (warp_c, warp_cov, weft_c, weft_cov, fv.abs() - half)
        };
        let shade = 1.0 - 0.35 * (1.0 - smoothstep(0.0, 3.0, top_edge));
        let mut col = mix(gap_c, scale(bot_c, shade), bot_cov);
        col = mix(col, top_c, top_cov);

        let mut in_mask = false;
        if let Some((blob, colour, strength)) = &stain {
            let sd = blob.sd(x, y);
            let soft = clamp01(-sd / 6.0 + 0.5);
            let mottle = 0.8 + 0.2 * vnoise(x / 7.0, y / 7.0, blob.seed ^ 3);
            col = tint(col, *colour, soft * mottle * strength);
            let tide = clamp01(1.0 - sd.abs() / 2.5);
            col = scale(col, 1.0 - 0.12 * tide);
            in_mask = sd <= 1.0;
        }
        if let Some((blob, fibres)) = &hole {
            let sd = blob.sd(x, y);
            col = scale(col, 0.62 + 0.38 * smoothstep(0.0, 6.0, sd));
            let dark = scale(
                [26.0, 20.0, 16.0],
                0.8 + 0.4 * vnoise(x / 5.0, y / 5.0, blob.seed ^ 7),
            );
            col = mix(col, dark, cov(sd));
            for (k, (a, b, w)) in fibres.iter().enumerate() {
                let (d, t) = seg_dist(x, y, *a, *b);
                let base = if k % 2 == 0 { warp } else { weft };
                col = mix(col, scale(base, 0.95 - 0.25 * t), cov(d - w / 2.0));
            }
            in_mask = sd <= 3.0;
        }
        if let Some((line, w, colour)) = &thread {
            let hw = w / 2.0;
            let (ds, _) = line.dist(x - 1.5, y - 2.0, 8.0);
            col = scale(col, 1.0 - 0.4 * (1.0 - smoothstep(hw - 0.5, hw + 2.5, ds)));
            let (d, s) = line.dist(x, y, 8.0);
            if d < hw + 1.0 {
                let t = (d / hw).min(1.0);
                let twist = 0.9 + 0.1 * (((s * 0.45 + t * 0.5).fract() - 0.5).abs() * 2.0);
                col = mix(
                    col,
                    scale(*colour, (0.72 + 0.28 * (1.0 - t * t)) * twist),
                    cov(d - hw),
                );
            }
            in_mask = d <= hw + 2.0;
        }
        (col, in_mask)
    })
}

// ------------------------------------------------------------------------------------
// chip: a dual-row IC package on a green board
// ------------------------------------------------------------------------------------

const BODY_HW: f64 = 40.0;
const BODY_HH: f64 = 60.0;
const PINS_PER_SIDE: usize = 6;
const PIN_PITCH: f64 = 19.0;
const PIN_HW: f64 = 4.0;
const PIN_LEN: f64 = 23.0;

fn pin_v(k: usize) -> f64 {
    (k as f64 - (PINS_PER_SIDE as f64 - 1.0) / 2.0) * PIN_PITCH
}

/// Signed distance to a pin leaving the body at (side * BODY_HW, vk), turned by `angle`,
/// plus its position along the pin (0 at the body).
fn pin_sd(u: f64, v: f64, side: f64, vk: f64, angle: f64) -> (f64, f64, f64) {
    let (s, c) = sin_cos(angle);
    let (ax, ay) = (side * c, s);
    let (wx, wy) = (u - side * BODY_HW, v - vk);
    let along = wx * ax + wy * ay;
    let across = -wx * ay + wy * ax;
    let sd = ((along - PIN_LEN / 2.0).abs() - PIN_LEN / 2.0).max(across.abs() - PIN_HW);
    (sd, along, across)
}

/// The board's copper traces, in chip coordinates (the same layout for every image).
fn chip_traces() -> Vec<Polyline> {
    let mut t = Vec::new();
    for k in 0..PINS_PER_SIDE {
        let y0 = pin_v(k);
        let fan = (k as f64 - 2.5) * 10.0;
        t.push(Polyline::new(vec![
            (-70.0, y0),
            (-84.0, y0),
            (-98.0, y0 + fan),
            (-220.0, y0 + fan),
        ]));
        if k % 2 == 0 {
            t.push(Polyline::new(vec![(70.0, y0), (220.0, y0)]));
        } else {
            t.push(Polyline::new(vec![
                (70.0, y0),
                (84.0, y0),
                (96.0, y0 + 8.0),
            ]));
        }
    }
    t.push(Polyline::new(vec![
        (-220.0, -96.0),
        (-50.0, -96.0),
        (-30.0, -116.0),
        (-30.0, -220.0),
    ]));
    t.push(Polyline::new(vec![(60.0, -92.0), (60.0, -220.0)]));
    t.push(Polyline::new(vec![(20.0, 100.0), (20.0, 220.0)]));
    t.push(Polyline::new(vec![
        (-62.0, 98.0),
        (-90.0, 126.0),
        (-220.0, 126.0),
    ]));
    t
}

const CHIP_VIAS: [Pt; 7] = [
    (60.0, -92.0),
    (20.0, 100.0),
    (-62.0, 98.0),
    (96.0, -39.5),
    (96.0, -1.5),
    (96.0, 36.5),
    (-104.0, -150.0),
];

fn render_chip(rng: &mut Rng, defect: Option<&str>, _variant: usize) -> Rendered {
    let cx = 128.0 + rng.range(-4.0, 4.0);
    let cy = 128.0 + rng.range(-4.0, 4.0);
    let (rs, rc) = sin_cos(rng.range(-0.05, 0.05));
    let bright = rng.range(0.94, 1.06);
    let seed = rng.next_u64();
    let pcb = scale([30.0, 108.0, 60.0], bright);
    let trace = scale([46.0, 136.0, 74.0], bright);
    let tin = scale([196.0, 188.0, 168.0], bright);
    let silk = [226.0, 230.0, 222.0];
    let body_l = 30.0 * rng.range(0.9, 1.1);
    let pin_c = scale([204.0, 206.0, 212.0], bright);
    let traces = chip_traces();

    // Pins: (side, v, angle, present).
    let mut pins: Vec<(f64, f64, f64, bool)> = Vec::new();
    for side in [-1.0, 1.0] {
        for k in 0..PINS_PER_SIDE {
            pins.push((side, pin_v(k), 0.0, true));
        }
    }
    let mut defect_pin: Option<usize> = None;
    let mut cracks: Vec<Polyline> = Vec::new();
    let mut crack_w = 0.0;
    let mut description = None;
    match defect {
        Some("bent_pin") | Some("missing_pin") => {
            let idx = rng.below(pins.len());
            defect_pin = Some(idx);
            let side = if pins[idx].0 < 0.0 { "left" } else { "right" };
            if defect == Some("bent_pin") {
                let angle = rng.sign() * rng.range(0.32, 0.52);
                // Keep the outermost pins bending away from the row, so they stay visible.
                let k = idx % PINS_PER_SIDE;
                let angle = if k == 0 {
                    -angle.abs()
                } else if k == PINS_PER_SIDE - 1 {
                    angle.abs()
                } else {
                    angle
                };
                pins[idx].2 = angle;
                description = Some(format!(
                    "One pin on the {side} side is bent {} out of line with its neighbours.",
                    if angle < 0.0 { "upwards" } else { "downwards" }
                ));
            } else {
                pins[idx].3 = false;
                description = Some(format!(
                    "One pin on the {side} side is absent, leaving its pad on the board bare."
                ));
            }
        }
        Some("crack") => {
            // From a point on one edge of the body towards a point on another edge, part or
            // all of the way, wandering sideways; sometimes with a short side branch.
            let (lu, lv) = (BODY_HW - 1.0, BODY_HH - 1.0);
            let edge_point = |side: usize, rng: &mut Rng| match side {
                0 => (rng.range(-lu + 6.0, lu - 6.0), -lv),
                1 => (rng.range(-lu + 6.0, lu - 6.0), lv),
                2 => (-lu, rng.range(-lv + 6.0, lv - 6.0)),
                _ => (lu, rng.range(-lv + 6.0, lv - 6.0)),
            };
            let (a, b) = loop {
                // Sides: 0 top, 1 bottom, 2 left, 3 right.
                let s0 = rng.below(4);
                let s1 = if rng.chance(0.5) {
                    s0 ^ 1
                } else if s0 < 2 {
                    2 + rng.below(2)
                } else {
                    rng.below(2)
                };
                let a = edge_point(s0, rng);
                let b = edge_point(s1, rng);
                if len2(b.0 - a.0, b.1 - a.1) >= 50.0 {
                    break (a, b);
                }
            };
            let full = len2(b.0 - a.0, b.1 - a.1);
            let (ux, uy) = ((b.0 - a.0) / full, (b.1 - a.1) / full);
            let total = full * rng.range(0.55, 1.0);
            let n = (total / 6.0).ceil() as usize;
            let mut offset = 0.0;
            let mut pts = vec![a];
            for k in 1..=n {
                let t = total * k as f64 / n as f64;
                offset = (offset + rng.range(-3.5, 3.5)).clamp(-7.0, 7.0);
                let p = (a.0 + ux * t - uy * offset, a.1 + uy * t + ux * offset);
                pts.push((p.0.clamp(-lu, lu), p.1.clamp(-lv, lv)));
            }
            if rng.chance(0.5) {
                let mut q = pts[pts.len() / 2];
                let mut branch = vec![q];
                let (s, c) = sin_cos(rng.sign() * rng.range(0.6, 1.1));
                let (bx, by) = (ux * c - uy * s, ux * s + uy * c);
                for _ in 0..2 + rng.below(2) {
                    let l = rng.range(4.0, 7.0);
                    let j = rng.range(-2.0, 2.0);
                    q = (
                        (q.0 + bx * l - by * j).clamp(-lu, lu),
                        (q.1 + by * l + bx * j).clamp(-lv, lv),
                    );
                    branch.push(q);
                }
                cracks.push(Polyline::new(branch));
            }
            cracks.insert(0, Polyline::new(pts));
            crack_w = rng.range(1.1, 1.5);
        }
        _ => {}
    }
    let dot = (-BODY_HW + 12.0, -BODY_HH + 12.0);

    render(defect.is_some(), description, |x, y| {
        let (dx, dy) = (x - cx, y - cy);
        let u = rc * dx + rs * dy;
        let v = -rs * dx + rc * dy;
        let mut col = scale(pcb, 0.95 + 0.10 * vnoise(x / 24.0, y / 24.0, seed));
        // Copper traces under the solder mask.
        let mut td = f64::INFINITY;
        for t in &traces {
            td = td.min(t.dist(u, v, 4.0).0);
        }
        col = mix(col, trace, cov(td - 2.5));
        // Vias: tinned ring with a drilled hole.
        for &(vx, vy) in &CHIP_VIAS {
            let d = len2(u - vx, v - vy);
            col = mix(col, tin, cov(d - 5.0));
            col = mix(col, [22.0, 34.0, 26.0], cov(d - 2.2));
        }
        // Silkscreen: lines above and below the body and a pin-1 dot.
        let sl = (v.abs() - (BODY_HH + 8.0)).abs().max(u.abs() - 34.0) - 0.8;
        col = mix(col, silk, cov(sl));
        col = mix(col, silk, cov(len2(u + 73.0, v + BODY_HH + 4.0) - 2.6));
        // Solder pads.
        for k in 0..PINS_PER_SIDE {
            let vk = pin_v(k);
            let sd = ((u.abs() - 60.0).abs() - 10.0).max((v - vk).abs() - 6.0);
            col = mix(
                col,
                scale(tin, 0.95 + 0.08 * snoise(u / 3.0, v / 3.0, seed ^ 5)),
                cov(sd),
            );
        }
        // Shadows of the pins and of the body (light from the upper left).
        let mut pin_shadow = f64::INFINITY;
        for &(side, vk, angle, present) in &pins {
            if present {
                pin_shadow = pin_shadow.min(pin_sd(u - 1.5, v - 2.0, side, vk, angle).0);
            }
        }
        col = scale(col, 1.0 - 0.35 * (1.0 - smoothstep(-0.5, 2.0, pin_shadow)));
        let body_shadow = round_rect_sd(u - 3.0, v - 4.0, BODY_HW, BODY_HH, 3.0);
        col = scale(col, 1.0 - 0.45 * (1.0 - smoothstep(-2.0, 6.0, body_shadow)));
        // Pins.
        let mut in_mask = false;
        for (idx, &(side, vk, angle, present)) in pins.iter().enumerate() {
            let (sd, along, across) = pin_sd(u, v, side, vk, angle);
            if present && sd < 1.0 {
                let ta = across / PIN_HW;
                let mut shade = 0.62 + 0.38 * (1.0 - ta * ta);
                if along < 6.0 {
                    shade *= 0.78 + 0.22 * (along / 6.0).max(0.0);
                }
                if along > PIN_LEN - 9.0 {
                    shade *= 1.05;
                }
                col = mix(col, scale(pin_c, shade), cov(sd));
            }
            if defect_pin == Some(idx) {
                let orig = pin_sd(u, v, side, vk, 0.0).0;
                in_mask |= orig <= 2.0 || (present && sd <= 2.0);
            }
        }
        // Body: moulded black plastic with a bevel, a pin-1 dot and possibly a crack.
        let bsd = round_rect_sd(u, v, BODY_HW, BODY_HH, 3.0);
        if bsd < 1.0 {
            let mut l =
                body_l * (1.0 - 0.18 * v / BODY_HH) + 1.5 * fbm(u / 8.0, v / 8.0, seed ^ 6, 2);
            l += 16.0
                * (1.0 - smoothstep(0.0, 3.0, -bsd))
                * (0.6 - 0.4 * (u + v) / (BODY_HW + BODY_HH));
            let dd = len2(u - dot.0, v - dot.1) - 5.0;
            l += 14.0 * cov(dd) - 10.0 * clamp01(1.0 - dd.abs() / 1.2);
            let mut body = [l, l, l * 1.08];
            if !cracks.is_empty() {
                let mut d = f64::INFINITY;
                for c in &cracks {
                    d = d.min(c.dist(u, v, 4.0).0);
                }
                body = mix(body, [168.0, 168.0, 162.0], cov(d - crack_w / 2.0));
                in_mask = d <= crack_w / 2.0 + 2.0 && bsd <= 0.0;
            }
            col = mix(col, body, cov(bsd));
        }
        (col, in_mask)
    })
}

// ------------------------------------------------------------------------------------
// Question content
// ------------------------------------------------------------------------------------

/// (question, correct answer, wrong answers).
type Choice = (&'static str, &'static str, &'static [&'static str]);

struct Category {
    name: &'static str,
    noun: &'static str,
    object: &'static str,
    object_distractors: &'static [&'static str],
    /// Draws one image: (seeded PRNG, defect folder or None, image number).
    render: fn(&mut Rng, Option<&str>, usize) -> Rendered,
    /// (folder, readable name, default description, cause question, effect question).
    defects: &'static [(&'static str, &'static str, &'static str, Choice, Choice)],
    extra_wrong_descriptions: &'static [&'static str],
    structure: &'static [Choice],
    details: &'static [Choice],
}

const YES_NO_NO: &[&str] = &["No"];
const YES_NO_YES: &[&str] = &["Yes"];

const CATEGORIES: [Category; 3] = [
    Category {
        name: "washer",
        noun: "washer",
        object: "Metal washer",
        object_distractors: &[
            "Hex nut",
            "Woven fabric",
            "Integrated circuit",
            "Printed circuit board",
            "Coil spring",
            "Bottle cap",
        ],
        render: render_washer,
        defects: &[
            (
                "scratch",
                "Scratch",
                "A thin straight line runs across the metal surface of the ring.",
                (
                    "What most likely caused this defect?",
                    "Contact with a hard or sharp object during handling or transport",
                    &[
                        "Liquid residue that dried on the surface",
                        "A worn punching die that cut the outline short",
                        "Too much heat during annealing",
                    ],
                ),
                (
                    "How does this defect affect the washer?",
                    "It is mainly cosmetic, but it can become a starting point for corrosion",
                    &[
                        "The washer can no longer fit over its bolt",
                        "Material is missing from the edge, so it cannot carry its load",
                        "It has no effect because the surface is unchanged",
                    ],
                ),
            ),
            (
                "notch",
                "Notch",
                "A rounded bite is missing from the outer edge, so the background shows through.",
                (
                    "What most likely caused this defect?",
                    "A chipped or misaligned punching die, or an impact on the edge",
                    &[
                        "A fingerprint or oil left on the surface",
                        "Slow oxidation during humid storage",
                        "Light abrasion while polishing",
                    ],
                ),
                (
                    "What is the main consequence of this defect?",
                    "The bearing surface is reduced, so the load is spread unevenly and the part may crack",
                    &[
                        "Only the colour changes; the function is unaffected",
                        "The centre hole becomes too small for the bolt",
                        "The washer becomes magnetic",
                    ],
                ),
            ),
            (
                "stain",
                "Stain",
                "An irregular brownish patch discolours part of the metal surface.",
                (
                    "What most likely caused this defect?",
                    "Oil, coolant or water residue, or the start of corrosion",
                    &[
                        "A sharp tool dragged across the surface",
                        "Material torn out of the edge during punching",
                        "A crack in the raw sheet metal",
                    ],
                ),
                (
                    "How should this defect be judged?",
                    "Mostly cosmetic, but it can hide or start corrosion and should be cleaned",
                    &[
                        "A piece of the washer is missing and it must be scrapped",
                        "The washer will no longer fit the bolt",
                        "The ring has become thicker on one side",
                    ],
                ),
            ),
        ],
        extra_wrong_descriptions: &[
            "The ring is bent and no longer lies flat.",
            "The centre hole is shifted far off centre.",
            "The whole washer is covered in rust.",
        ],
        structure: &[
            (
                "What is the overall shape of this part?",
                "A flat ring with a round hole in the middle",
                &[
                    "A solid disc without a hole",
                    "A hexagonal block",
                    "A square frame",
                    "A threaded cylinder",
                ],
            ),
            (
                "How many holes go through the part?",
                "One",
                &["None", "Two", "Four"],
            ),
        ],
        details: &[
            (
                "What colour is the part's surface?",
                "Light grey metal",
                &["Brass yellow", "Matte black", "Copper red", "Bright blue"],
            ),
            (
                "What does the background look like?",
                "Dark and plain",
                &["A green circuit board", "Bright white", "A woven fabric"],
            ),
            (
                "Is the outer edge of the ring smooth and unbroken?",
                "Yes",
                YES_NO_NO,
            ),
        ],
    },
    Category {
        name: "weave",
        noun: "fabric",
        object: "Woven fabric",
        object_distractors: &[
            "Metal washer",
            "Leather",
            "Integrated circuit",
            "Printed circuit board",
            "Wood panel",
            "Ceramic tile",
        ],
        render: render_weave,
        defects: &[
            (
                "hole",
                "Hole",
                "A dark, roughly round opening with frayed edges breaks through the weave.",
                (
                    "What most likely caused this defect?",
                    "Yarns broken by a snag, a weaving fault or wear",
                    &[
                        "A liquid that was spilled and dried on the cloth",
                        "A yarn of another colour woven in by mistake",
                        "Uneven dyeing of the cloth",
                    ],
                ),
                (
                    "What is the consequence of this defect?",
                    "The fabric is weakened and the opening can grow, so the piece should be rejected",
                    &[
                        "Only the shade changes; the strength is unaffected",
                        "The fabric becomes stiffer",
                        "It has no effect on the product",
                    ],
                ),
            ),
            (
                "stain",
                "Stain",
                "An irregular discoloured patch spreads over several threads.",
                (
                    "What most likely caused this defect?",
                    "Contact with oil, dye or another liquid during production or handling",
                    &[
                        "A yarn broke and left an opening",
                        "A stray yarn was caught on the surface",
                        "The loom skipped several threads",
                    ],
                ),
                (
                    "What is the consequence of this defect?",
                    "It spoils the appearance; the cloth must be cleaned or downgraded",
                    &[
                        "The cloth will tear along the mark",
                        "The threads have separated and left a gap",
                        "Nothing, because such marks are part of the pattern",
                    ],
                ),
            ),
            (
                "loose_thread",
                "Loose thread",
                "A single stray thread curves across the surface of the fabric.",
                (
                    "What most likely caused this defect?",
                    "A yarn end that was not trimmed or was pulled out of the weave",
                    &[
                        "A chemical spilled on the cloth",
                        "Threads cut through by a sharp edge",
                        "Dye applied unevenly",
                    ],
                ),
                (
                    "What is the consequence of this defect?",
                    "It can snag and pull more yarn out, so it should be trimmed",
                    &[
                        "It changes the colour of the fabric permanently",
                        "It leaves an open hole in the fabric",
                        "It has no influence on quality at all",
                    ],
                ),
            ),
        ],
        extra_wrong_descriptions: &[
            "Several threads are missing, leaving a straight gap across the cloth.",
            "The weave changes from a plain grid to a diagonal twill.",
            "The fabric is folded over on itself.",
        ],
        structure: &[
            (
                "How are the threads of this material arranged?",
                "Horizontal and vertical threads interlaced over and under each other",
                &[
                    "Threads running only diagonally",
                    "Randomly matted fibres without a pattern",
                    "Knitted loops in rows",
                    "Parallel threads in one direction only",
                ],
            ),
            (
                "Is the weave pattern regular across the image?",
                "Yes",
                YES_NO_NO,
            ),
        ],
        details: &[
            (
                "What is the main colour of the material?",
                "Tan or beige",
                &["Navy blue", "Bright red", "Black", "Green"],
            ),
            (
                "How would you describe the surface texture?",
                "A fine, even grid of threads",
                &[
                    "A smooth, glossy film",
                    "A coarse, shaggy pile",
                    "A grained leather surface",
                ],
            ),
        ],
    },
    Category {
        name: "chip",
        noun: "chip",
        object: "Integrated circuit",
        object_distractors: &[
            "Metal washer",
            "Woven fabric",
            "Electrolytic capacitor",
            "Hex nut",
            "Light bulb",
        ],
        render: render_chip,
        defects: &[
            (
                "bent_pin",
                "Bent pin",
                "One pin is bent sideways out of line with the others.",
                (
                    "What most likely caused this defect?",
                    "Mechanical force on the pin during handling, placement or testing",
                    &[
                        "Overheating of the die inside the package",
                        "Moisture trapped in the moulding compound",
                        "A misaligned marking laser",
                    ],
                ),
                (
                    "What is the risk of this defect?",
                    "The pin may miss its pad or touch a neighbour, causing an open or a short circuit",
                    &[
                        "Only the package marking is affected",
                        "The chip runs slightly cooler",
                        "None, because pins are designed to bend",
                    ],
                ),
            ),
            (
                "missing_pin",
                "Missing pin",
                "One pin is absent, leaving its pad on the board bare.",
                (
                    "What most likely caused this defect?",
                    "The pin broke off or was cut away during trimming, forming or handling",
                    &[
                        "The marking laser was misaligned",
                        "The board colour faded",
                        "The body absorbed moisture",
                    ],
                ),
                (
                    "What is the risk of this defect?",
                    "The signal or supply on that pin is not connected, so the circuit may fail",
                    &[
                        "The chip only looks different but works normally",
                        "The body will crack from heat",
                        "Heat dissipation improves",
                    ],
                ),
            ),
            (
                "crack",
                "Crack",
                "A thin, jagged light line runs across the black body of the chip.",
                (
                    "What most likely caused this defect?",
                    "Mechanical stress or thermal shock on the moulded body",
                    &[
                        "A pin bent during placement",
                        "Flux residue left after soldering",
                        "A board trace etched too thin",
                    ],
                ),
                (
                    "What is the risk of this defect?",
                    "Moisture can reach the die inside, so the part may fail later",
                    &[
                        "A pin will lose contact with its pad",
                        "Only the orientation mark is hidden",
                        "None, because the body is only a cover",
                    ],
                ),
            ),
        ],
        extra_wrong_descriptions: &[
            "The orientation dot is missing from the body.",
            "Solder bridges join two neighbouring pins.",
            "The chip is mounted rotated by ninety degrees.",
        ],
        structure: &[
            (
                "How many pins are on each side of the package?",
                "6",
                &["3", "4", "5", "7", "8"],
            ),
            (
                "On which sides of the body are the pins placed?",
                "Left and right",
                &[
                    "Top and bottom",
                    "All four sides",
                    "Only on the left",
                    "There are no pins",
                ],
            ),
        ],
        details: &[
            (
                "What colour is the circuit board?",
                "Green",
                &["Blue", "Red", "White", "Black"],
            ),
            (
                "What marks the pin-1 orientation on the package?",
                "A small round dot near one corner",
                &[
                    "A notch in the middle of one end",
                    "A coloured stripe",
                    "There is no orientation mark",
                ],
            ),
            (
                "What colour are the pins?",
                "Silver",
                &["Gold", "Black", "Copper red"],
            ),
        ],
    },
];

const REGIONS: [&str; 9] = [
    "Top left",
    "Top",
    "Top right",
    "Left",
    "Centre",
    "Right",
    "Bottom left",
    "Bottom",
    "Bottom right",
];

/// One multiple-choice item: the correct answer plus `n - 1` of the wrong ones, with
/// n drawn from [min_n, max_n] (capped by what is available), in shuffled order.
fn question(
    rng: &mut Rng,
    qtype: &str,
    text: &str,
    correct: &str,
    wrong: &[&str],
    min_n: usize,
    max_n: usize,
) -> Value {
    let max_n = max_n.min(wrong.len() + 1);
    let min_n = min_n.min(max_n);
    let n = min_n + rng.below(max_n - min_n + 1);
    let mut pool: Vec<&str> = wrong.to_vec();
    rng.shuffle(&mut pool);
    pool.truncate(n - 1);
    let mut options = vec![correct];
    options.extend(pool);
    rng.shuffle(&mut options);
    let mut opts = Map::new();
    let mut answer = String::new();
    for (i, o) in options.iter().enumerate() {
        let letter = char::from(b'A' + i as u8).to_string();
        if *o == correct {
            answer = letter.clone();
        }
        opts.insert(letter, Value::String((*o).to_string()));
    }
    let mut item = Map::new();
    item.insert("Question".into(), Value::String(text.to_string()));
    item.insert("Answer".into(), Value::String(answer));
    item.insert("Options".into(), Value::Object(opts));
    item.insert("type".into(), Value::String(qtype.to_string()));
    item.insert("annotation".into(), Value::Bool(true));
    Value::Object(item)
}

fn mask_region(mask: &[u8]) -> Option<usize> {
    let (mut sx, mut sy, mut n) = (0u64, 0u64, 0u64);
    for (i, &m) in mask.iter().enumerate() {
        if m != 0 {
            sx += (i % SIZE) as u64;
            sy += (i / SIZE) as u64;
            n += 1;
        }
    }
    if n == 0 {
        return None;
    }
    let cell = |s: u64| ((3 * s) / (n * SIZE as u64)).min(2) as usize;
    Some(cell(sy) * 3 + cell(sx))
}

fn conversation(
    rng: &mut Rng,
    cat: &Category,
    defect: Option<usize>,
    region: Option<usize>,
    description: Option<&str>,
) -> Vec<Value> {
    let mut conv = Vec::new();
    let ad_text = [
        "Is there any defect in the object?".to_string(),
        format!("Does this {} show any defect?", cat.noun),
        format!("Is anything wrong with the {} in this image?", cat.noun),
    ];
    let ad = &ad_text[rng.below(ad_text.len())];
    let (yes, no) = if defect.is_some() {
        ("Yes", YES_NO_NO)
    } else {
        ("No", YES_NO_YES)
    };
    conv.push(question(rng, "Anomaly Detection", ad, yes, no, 2, 2));
    if let (Some(d), Some(region)) = (defect, region) {
        let (_, readable, default_desc, cause, effect) = cat.defects[d];
        let mut names: Vec<&str> = cat
            .defects
            .iter()
            .filter(|x| x.1 != readable)
            .map(|x| x.1)
            .collect();
        let n = if rng.chance(0.5) {
            names.push("No defect");
            4
        } else {
            3
        };
        let dc_text = format!("What kind of defect does the {} have?", cat.noun);
        conv.push(question(
            rng,
            "Defect Classification",
            &dc_text,
            readable,
            &names,
            n,
            n,
        ));

        let wrong_regions: Vec<&str> = REGIONS
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != region)
            .map(|(_, r)| *r)
            .collect();
        let dl_text = [
            "Where in the image is the defect?",
            "In which part of the image is the defect located?",
        ];
        let dl = dl_text[rng.below(dl_text.len())];
        conv.push(question(
            rng,
            "Defect Localization",
            dl,
            REGIONS[region],
            &wrong_regions,
            4,
            5,
        ));

        let mut wrong_desc: Vec<&str> = cat
            .defects
            .iter()
            .filter(|x| x.1 != readable)
            .map(|x| x.2)
            .collect();
        wrong_desc
            .push(cat.extra_wrong_descriptions[rng.below(cat.extra_wrong_descriptions.len())]);
        let correct_desc = description.unwrap_or(default_desc);
        conv.push(question(
            rng,
            "Defect Description",
            "Which description fits the defect best?",
            correct_desc,
            &wrong_desc,
            3,
            4,
        ));

        let (q, correct, wrong) = if rng.chance(0.5) { cause } else { effect };
        conv.push(question(rng, "Defect Analysis", q, correct, wrong, 2, 4));
    }
    let oc_text = [
        "Which object is shown in the image?",
        "What kind of object is being inspected here?",
    ];
    let oc = oc_text[rng.below(oc_text.len())];
    conv.push(question(
        rng,
        "Object Classification",
        oc,
        cat.object,
        cat.object_distractors,
        3,
        4,
    ));
    if defect.is_none() {
        let (q, correct, wrong) = cat.structure[rng.below(cat.structure.len())];
        conv.push(question(rng, "Object Structure", q, correct, wrong, 3, 5));
        let (q, correct, wrong) = cat.details[rng.below(cat.details.len())];
        conv.push(question(rng, "Object Details", q, correct, wrong, 3, 5));
    }
    conv
}

// ------------------------------------------------------------------------------------
// Output
// ------------------------------------------------------------------------------------

fn write_png(path: &Path, data: &[u8], colour: ExtendedColorType) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Best, FilterType::Adaptive)
        .write_image(data, SIZE as u32, SIZE as u32, colour)
        .map_err(|e| format!("cannot encode {}: {e}", path.display()))?;
    fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn mse(a: &[u8], b: &[u8]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = i64::from(x) - i64::from(y);
            (d * d) as u64
        })
        .sum()
}

fn run(root: &Path) -> Result<(), String> {
    let mut index = Map::new();
    let mut files = 0usize;
    for cat in &CATEGORIES {
        let prefix = format!("{DATASET}/{}", cat.name);
        let mut train = Vec::new();
        for n in 0..TRAIN_GOOD {
            let rel = format!("{prefix}/train/good/{n:03}.png");
            let img = (cat.render)(&mut Rng::from_key(&rel), None, n);
            write_png(&root.join(&rel), &img.rgb, ExtendedColorType::Rgb8)?;
            files += 1;
            train.push((rel, img.rgb));
        }
        let mut tests: Vec<(Option<usize>, usize)> = (0..TEST_GOOD).map(|n| (None, n)).collect();
        for d in 0..cat.defects.len() {
            tests.extend((0..TEST_PER_DEFECT).map(|n| (Some(d), n)));
        }
        for (defect, n) in tests {
            let folder = defect.map_or("good", |d| cat.defects[d].0);
            let rel = format!("{prefix}/test/{folder}/{n:03}.png");
            let img = (cat.render)(
                &mut Rng::from_key(&rel),
                defect.map(|d| cat.defects[d].0),
                n,
            );
            write_png(&root.join(&rel), &img.rgb, ExtendedColorType::Rgb8)?;
            files += 1;
            let mut mask_path = String::new();
            let mut region = None;
            if let Some(mask) = &img.mask {
                mask_path = format!("ground_truth/{folder}/{n:03}_mask.png");
                write_png(
                    &root.join(&prefix).join(&mask_path),
                    mask,
                    ExtendedColorType::L8,
                )?;
                files += 1;
                region = Some(mask_region(mask).ok_or_else(|| format!("empty mask for {rel}"))?);
            }

            let mut ranked: Vec<(u64, usize)> = train
                .iter()
                .enumerate()
                .map(|(i, t)| (mse(&img.rgb, &t.1), i))
                .collect();
            ranked.sort();
            let similar: Vec<Value> = ranked
                .iter()
                .take(2)
                .map(|&(_, i)| Value::String(train[i].0.clone()))
                .collect();

            let mut rng = Rng::from_key(&format!("{rel}#questions"));
            let conv = conversation(&mut rng, cat, defect, region, img.description.as_deref());
            let first = rng.below(TRAIN_GOOD);
            let second = (first + 1 + rng.below(TRAIN_GOOD - 1)) % TRAIN_GOOD;
            let random = vec![
                Value::String(train[first].0.clone()),
                Value::String(train[second].0.clone()),
            ];

            let mut entry = Map::new();
            entry.insert(
                "image_path".into(),
                Value::String(rel.splitn(3, '/').nth(2).unwrap_or_default().to_string()),
            );
            entry.insert("conversation".into(), Value::Array(conv));
            entry.insert("mask_path".into(), Value::String(mask_path));
            entry.insert("similar_templates".into(), Value::Array(similar));
            entry.insert("random_templates".into(), Value::Array(random));
            index.insert(rel, Value::Object(entry));
        }
    }

    // serde_json indents by two spaces; JSON strings never hold a raw newline, so doubling
    // each line's leading spaces gives the four-space layout.
    let pretty =
        serde_json::to_string_pretty(&Value::Object(index.clone())).map_err(|e| e.to_string())?;
    let mut json = String::with_capacity(pretty.len() * 2);
    for line in pretty.lines() {
        let body = line.trim_start_matches(' ');
        json.push_str(&" ".repeat(2 * (line.len() - body.len())));
        json.push_str(body);
        json.push('\n');
    }
    fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    fs::write(root.join("mmad.json"), json).map_err(|e| format!("cannot write mmad.json: {e}"))?;
    files += 1;
    summarise(&index, files);
    Ok(())
}

fn summarise(index: &Map<String, Value>, files: usize) {
    let mut types: Vec<(String, usize)> = Vec::new();
    let mut letters = [0usize; 5];
    let mut option_counts = [0usize; 6];
    for entry in index.values() {
        for q in entry["conversation"].as_array().into_iter().flatten() {
            let t = q["type"].as_str().unwrap_or_default().to_string();
            match types.iter_mut().find(|(name, _)| *name == t) {
                Some((_, n)) => *n += 1,
                None => types.push((t, 1)),
            }
            if let Some(a) = q["Answer"].as_str().and_then(|a| a.bytes().next()) {
                letters[usize::from(a - b'A').min(4)] += 1;
            }
            option_counts[q["Options"].as_object().map_or(0, |o| o.len()).min(5)] += 1;
        }
    }
    println!("wrote {files} files, {} query images", index.len());
    for (t, n) in &types {
        println!("  {t}: {n}");
    }
    println!("  correct letters A-E: {letters:?}");
    println!("  questions with 2..5 options: {:?}", &option_counts[2..]);
}

fn main() {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "assets/sample".to_string()),
    );
    if let Err(e) = run(&root) {
        eprintln!("make_sample: {e}");
        std::process::exit(1);
    }
}
