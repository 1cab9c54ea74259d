//! Multimodal rotary positions (M-RoPE): each token has a temporal, a height
//! and a width position. Text tokens have all three equal and count up; an
//! image's tokens share the position where the image starts plus their own
//! (frame, row, column) in the merged grid, and the text after the image goes on
//! from one past the largest of them (transformers' `get_rope_index`).

/// The three position rows of a prompt, and where the first generated token goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MropePositions {
    /// `[temporal, height, width]`, one entry per prompt token in each.
    pub rows: [Vec<u32>; 3],
    /// The position of the first token after the prompt (all three axes alike).
    pub next: u32,
}

/// What does not fit between a prompt's image tokens and its image grids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RopeIndexError {
    #[error(
        "image {image} needs {expected} placeholder tokens from position {start}, the prompt has {found}"
    )]
    ShortImage {
        image: usize,
        start: usize,
        expected: usize,
        found: usize,
    },
    #[error("the prompt has more image placeholder runs than the {images} image grid(s)")]
    TooFewGrids { images: usize },
    #[error("{unused} image grid(s) have no placeholders in the prompt")]
    UnusedGrids { unused: usize },
    #[error("image grid {grid:?} is not a multiple of the merge size {merge}")]
    BadGrid { grid: [u32; 3], merge: u32 },
}

/// Positions of `input_ids` whose image tokens stand for `grids` (in patches,
/// before merging `merge x merge` patches into one token), in order.
pub fn rope_index(
    input_ids: &[u32],
    image_token_id: u32,
    grids: &[[u32; 3]],
    merge: u32,
) -> Result<MropePositions, RopeIndexError> {
    let mut rows: [Vec<u32>; 3] = std::array::from_fn(|_| Vec::with_capacity(input_ids.len()));
    let mut next = 0u32;
    let mut image = 0usize;
    let mut i = 0usize;
    while i < input_ids.len() {
        if input_ids[i] != image_token_id {
            for row in &mut rows {
                row.push(next);
            }
            next += 1;
            i += 1;
            continue;
        }
        let grid = *grids.get(image).ok_or(RopeIndexError::TooFewGrids {
            images: grids.len(),
        })?;
        let [t, h, w] = grid;
        if merge == 0 || h % merge != 0 || w % merge != 0 {
            return Err(RopeIndexError::BadGrid { grid, merge });
        }
        let (h, w) = (h / merge, w / merge);
        let count = (t * h * w) as usize;
        let found = input_ids[i..]
            .iter()
            .take(count)
            .take_while(|&&id| id == image_token_id)
            .count();
        if found < count {
            return Err(RopeIndexError::ShortImage {
                image,
                start: i,
                expected: count,
                found,
            });
        }
        for frame in 0..t {
            for r in 0..h {
                for c in 0..w {
                    rows[0].push(next + frame);
                    rows[1].push(next + r);
                    rows[2].push(next + c);
                }
            }
        }
        // transformers 5 steps past an image by its larger side alone (an
        // image has one frame).
        next += h.max(w);
        image += 1;
        i += count;
    }
    if image < grids.len() {
        return Err(RopeIndexError::UnusedGrids {
            unused: grids.len() - image,
        });
    }
    Ok(MropePositions { rows, next })
}

/// The rotary frequencies of the text model and which axis drives each.
#[derive(Debug, Clone)]
pub struct MropeTable {
    inv_freq: Vec<f32>,
    axis: Vec<usize>,
}

impl MropeTable {
    pub fn new(head_dim: usize, theta: f32, section: [usize; 3], interleaved: bool) -> MropeTable {
        let half = head_dim / 2;
        // As transformers: the exponent and the power in float32.
        let inv_freq = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let axis = (0..half)
            .map(|j| {
                if interleaved {
                    // Qwen3-VL: T, H, W, T, H, W, ... while each axis has
                    // frequencies left, then T for the rest.
                    match j % 3 {
                        1 if j < 3 * section[1] => 1,
                        2 if j < 3 * section[2] => 2,
                        _ => 0,
                    }
                } else if j < section[0] {
                    0
                } else if j < section[0] + section[1] {
                    1
                } else {
                    2
                }
            })
            .collect();
        MropeTable { inv_freq, axis }
    }

    /// `cos` and `sin`, `positions x head_dim / 2` row-major, of the angles at
    /// these positions (`rows[axis][token]`).
    pub fn cos_sin(&self, rows: &[&[u32]; 3]) -> (Vec<f32>, Vec<f32>) {
        let n = rows[0].len();
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        let [t, h, w] = rows;
        for ((&pt, &ph), &pw) in t.iter().zip(h.iter()).zip(w.iter()) {
            let pos = [pt, ph, pw];
            for (f, &axis) in self.inv_freq.iter().zip(&self.axis) {
                let angle = pos[axis] as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }

    pub fn half_dim(&self) -> usize {
        self.inv_freq.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_then_image_then_text() {
        // 2 text tokens, a 1 x 4 x 6 grid merged by 2 (2 x 3 tokens), 2 text tokens.
        let ids = [1, 2, 9, 9, 9, 9, 9, 9, 3, 4];
        let p = rope_index(&ids, 9, &[[1, 4, 6]], 2).unwrap();
        assert_eq!(p.rows[0], vec![0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(p.rows[1], vec![0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(p.rows[2], vec![0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        assert_eq!(p.next, 7);
    }

    #[test]
    fn text_only_counts_up_and_mismatches_are_errors() {
        let p = rope_index(&[5, 6, 7], 9, &[], 2).unwrap();
        assert_eq!(p.rows, [vec![0, 1, 2], vec![0, 1, 2], vec![0, 1, 2]]);
        assert_eq!(p.next, 3);
        assert!(matches!(
            rope_index(&[9, 9, 1], 9, &[[1, 4, 4]], 2),
            Err(RopeIndexError::ShortImage { found: 2, .. })
        ));
        assert!(matches!(
            rope_index(&[1], 9, &[[1, 2, 2]], 2),
            Err(RopeIndexError::UnusedGrids { unused: 1 })
        ));
        assert!(matches!(
            rope_index(&[9], 9, &[], 2),
            Err(RopeIndexError::TooFewGrids { images: 0 })
        ));
    }

    #[test]
    fn interleaved_sections_alternate_axes() {
        let t = MropeTable::new(16, 10_000.0, [4, 2, 2], true);
        assert_eq!(t.axis, vec![0, 1, 2, 0, 1, 2, 0, 0]);
        let blocks = MropeTable::new(16, 10_000.0, [4, 2, 2], false);
        assert_eq!(blocks.axis, vec![0, 0, 0, 0, 1, 1, 2, 2]);
        let (cos, sin) = t.cos_sin(&[&[0, 3], &[0, 5], &[0, 7]]);
        assert_eq!(&cos[..8], &[1.0; 8]);
        assert_eq!(sin[8 + 1], (5.0 * t.inv_freq[1]).sin());
        assert_eq!(sin[8 + 2], (7.0 * t.inv_freq[2]).sin());
        assert_eq!(sin[8 + 3], (3.0 * t.inv_freq[3]).sin());
    }
}
