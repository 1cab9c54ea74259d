//! Which endpoint gets the next question: the one with the fewest requests
//! outstanding among those below their concurrency limit, or, with image affinity,
//! the endpoint that got the image's first question, so a server's prefix cache
//! sees each image once.

use std::collections::HashMap;
use std::sync::Arc;

/// Least-outstanding-requests dispatch over endpoints with concurrency limits,
/// optionally keeping each image on one endpoint.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    capacity: Vec<usize>,
    outstanding: Vec<usize>,
    /// Image key -> endpoint, when image affinity is on.
    affinity: Option<HashMap<Arc<str>, usize>>,
}

impl Dispatcher {
    pub fn new(capacity: Vec<usize>, image_affinity: bool) -> Self {
        let outstanding = vec![0; capacity.len()];
        Dispatcher {
            capacity,
            outstanding,
            affinity: image_affinity.then(HashMap::new),
        }
    }

    /// Takes a slot for a question about `image`: the endpoint with the fewest
    /// outstanding requests among those with room (the first such on ties), or,
    /// under image affinity, the image's endpoint. `None`: it must wait.
    pub fn pick(&mut self, image: &Arc<str>) -> Option<usize> {
        if let Some(&e) = self.affinity.as_ref().and_then(|m| m.get(image)) {
            if self.outstanding[e] < self.capacity[e] {
                self.outstanding[e] += 1;
                return Some(e);
            }
            return None;
        }
        let e = (0..self.capacity.len())
            .filter(|&e| self.outstanding[e] < self.capacity[e])
            .min_by_key(|&e| self.outstanding[e])?;
        self.outstanding[e] += 1;
        if let Some(map) = &mut self.affinity {
            map.insert(image.clone(), e);
        }
        Some(e)
    }

    /// A question on endpoint `e` has finished.
    pub fn release(&mut self, e: usize) {
        self.outstanding[e] = self.outstanding[e].saturating_sub(1);
    }

    pub fn has_room(&self) -> bool {
        self.outstanding
            .iter()
            .zip(&self.capacity)
            .any(|(o, c)| o < c)
    }

    pub fn in_flight(&self) -> usize {
        self.outstanding.iter().sum()
    }

    pub fn outstanding(&self) -> &[usize] {
        &self.outstanding
    }
}
