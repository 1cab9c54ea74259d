//! Runs a vision tower over several images on the CPU with whole images side
//! by side, one per core, instead of one image at a time split across cores.
//!
//! candle splits every matmul of a forward pass across all threads. A ViT's
//! matrices are small (197 tokens at 224 px), so that split is far from free:
//! on 2 cores a ViT-B/16 image took 0.41 s with both threads and 0.71 s with
//! one, so two images, each on its own thread, finish about 15% sooner than
//! one after the other with both threads. [`map_images`] runs single images on
//! single-thread rayon pools (candle's and gemm's parallel loops then run
//! inline), and gives the few images that cannot fill every core (the last of
//! an odd count on 2 cores) the whole machine, so no core idles at the end.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `forward` over images `0..count` and returns its results in image
/// order. `forward(range)` runs one pass over the images in `range` and
/// returns one result per image.
///
/// With `threads` cores and `count` images: `workers = min(threads, count)`
/// workers, each on its own pool of `threads / workers` threads, take single
/// images in turn until fewer than `workers` remain; those run as one pass
/// with every thread. One worker (or a pool that cannot be built) means one
/// pass over everything, as without this module.
pub fn map_images<T, E, F>(count: usize, threads: usize, forward: F) -> Result<Vec<T>, E>
where
    T: Send,
    E: Send,
    F: Fn(Range<usize>) -> Result<Vec<T>, E> + Sync,
{
    let workers = threads.min(count);
    if workers <= 1 {
        return forward(0..count);
    }
    let pools: Result<Vec<_>, _> = (0..workers)
        .map(|_| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads / workers)
                .thread_name(|i| format!("vision-image-{i}"))
                .build()
        })
        .collect();
    let Ok(pools) = pools else {
        return forward(0..count);
    };
    let side_by_side = count - count % workers;
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Vec<T>)>> = Mutex::new(Vec::with_capacity(side_by_side));
    let failed: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for pool in &pools {
            scope.spawn(|| {
                loop {
                    let image = next.fetch_add(1, Ordering::Relaxed);
                    if image >= side_by_side || lock(&failed).is_some() {
                        break;
                    }
                    match pool.install(|| forward(image..image + 1)) {
                        Ok(result) => lock(&done).push((image, result)),
                        Err(e) => {
                            lock(&failed).get_or_insert(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = into_inner(failed) {
        return Err(e);
    }
    let mut done = into_inner(done);
    done.sort_by_key(|(image, _)| *image);
    let mut out: Vec<T> = done.into_iter().flat_map(|(_, r)| r).collect();
    if side_by_side < count {
        out.extend(forward(side_by_side..count)?);
    }
    Ok(out)
}

/// A worker that panicked has already taken the scope down with it, so a
/// poisoned lock still holds whole entries.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Each image's result, tagged with the pass it ran in and how many
    /// threads that pass had.
    fn tagged(range: Range<usize>) -> Result<Vec<(usize, usize, usize)>, String> {
        let threads = rayon::current_num_threads();
        Ok(range.clone().map(|i| (i, range.start, threads)).collect())
    }

    #[test]
    fn results_come_back_in_image_order_with_whole_images_side_by_side() {
        let out = map_images(7, 2, tagged).unwrap();
        let images: Vec<usize> = out.iter().map(|r| r.0).collect();
        assert_eq!(images, (0..7).collect::<Vec<_>>());
        // The first six ran one image per pass on single-thread pools ...
        for &(image, pass_start, threads) in &out[..6] {
            assert_eq!((pass_start, threads), (image, 1), "image {image}");
        }
        // ... and the odd one out ran on the caller's (here: global) pool.
        assert_eq!(out[6].1, 6);
        assert_eq!(out[6].2, rayon::current_num_threads());
    }

    #[test]
    fn one_thread_or_one_image_is_a_single_pass() {
        for (count, threads) in [(5, 1), (1, 4), (0, 2)] {
            let passes = Mutex::new(Vec::new());
            let out = map_images(count, threads, |r: Range<usize>| {
                passes.lock().unwrap().push(r.clone());
                tagged(r)
            })
            .unwrap();
            assert_eq!(out.len(), count);
            assert_eq!(passes.into_inner().unwrap(), vec![0..count]);
        }
    }

    #[test]
    fn fewer_images_than_threads_share_the_threads_out() {
        let out = map_images(3, 6, tagged).unwrap();
        assert_eq!(out.len(), 3);
        for (image, pass_start, threads) in out {
            assert_eq!((image, pass_start, threads), (image, image, 2));
        }
    }

    #[test]
    fn the_work_runs_on_as_many_threads_as_workers() {
        let threads_seen = Mutex::new(HashSet::new());
        map_images(8, 2, |r: Range<usize>| {
            threads_seen
                .lock()
                .unwrap()
                .insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(20));
            tagged(r)
        })
        .unwrap();
        assert_eq!(threads_seen.into_inner().unwrap().len(), 2);
    }

    #[test]
    fn an_error_stops_the_work_and_is_returned() {
        let calls = AtomicUsize::new(0);
        let err = map_images(50, 2, |r: Range<usize>| {
            calls.fetch_add(1, Ordering::Relaxed);
            if r.start == 3 {
                return Err(format!("image {} is broken", r.start));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            tagged(r)
        })
        .unwrap_err();
        assert_eq!(err, "image 3 is broken");
        assert!(
            calls.into_inner() < 50,
            "workers kept going after the error"
        );
    }
}
