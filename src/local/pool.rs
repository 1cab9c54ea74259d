//! One copy of each loaded model per process.
//!
//! A 2B model in f32 takes about 8 GB. The app's Inspect tab, a Batch run and
//! the Knowledge re-run may all ask for the same model at once; each gets the
//! same weights behind one lock (a model answers one request at a time anyway),
//! rather than a copy each. The pool holds no model alive by itself: a model
//! lives as long as someone holds it (the app's loaded slot, a running run),
//! and the next request after the last holder let go loads it again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use candle_core::{DType, Device};

use super::{LocalError, LocalModel, ModelSource};

/// A loaded model shared by everyone who asked for it.
pub type SharedModel = Arc<Mutex<LocalModel>>;

/// What makes two loads the same: where the files are, the dtype asked for
/// and the device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    source: String,
    dtype: Option<DType>,
    device: String,
}

impl Key {
    fn new(source: &ModelSource, dtype: Option<DType>, device: &Device) -> Key {
        // Two spellings of one folder (relative, absolute, through a link) are
        // one model.
        let source = match source {
            ModelSource::Folder(folder) => {
                let resolved =
                    std::fs::canonicalize(folder).unwrap_or_else(|_| PathBuf::from(folder));
                resolved.display().to_string()
            }
            other => other.to_string(),
        };
        Key {
            source,
            dtype,
            device: format!("{:?}", device.location()),
        }
    }
}

/// A model from the pool, with what callers read without taking its lock (a
/// lock held for a whole reply, minutes on a CPU).
#[derive(Clone)]
pub struct Pooled {
    pub model: SharedModel,
    /// The model folder the files were read from.
    pub folder: PathBuf,
    /// How long the load took, in milliseconds.
    pub load_ms: f64,
    /// Whether this call loaded it (else someone else's copy is shared).
    pub fresh: bool,
}

struct Entry {
    key: Key,
    model: Weak<Mutex<LocalModel>>,
    folder: PathBuf,
    load_ms: f64,
}

static LOADED: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
/// Held while a model loads, so two callers asking for one model load it once.
static LOADING: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn find(key: &Key) -> Option<Pooled> {
    let mut loaded = lock(&LOADED);
    loaded.retain(|e| e.model.strong_count() > 0);
    loaded.iter().find(|e| &e.key == key).and_then(|e| {
        Some(Pooled {
            model: e.model.upgrade()?,
            folder: e.folder.clone(),
            load_ms: e.load_ms,
            fresh: false,
        })
    })
}

/// The model, already loaded when someone holds it, else loaded now
/// (blocking).
pub fn get_or_load(
    source: &ModelSource,
    dtype: Option<DType>,
    device: &Device,
) -> Result<Pooled, LocalError> {
    let key = Key::new(source, dtype, device);
    if let Some(found) = find(&key) {
        return Ok(found);
    }
    let _loading = lock(&LOADING);
    // Another caller may have loaded it while this one waited.
    if let Some(found) = find(&key) {
        return Ok(found);
    }
    let model = LocalModel::load(source, dtype, device)?;
    let (folder, load_ms) = (model.processor.dir.folder.clone(), model.load_ms);
    let model = Arc::new(Mutex::new(model));
    lock(&LOADED).push(Entry {
        key,
        model: Arc::downgrade(&model),
        folder: folder.clone(),
        load_ms,
    });
    Ok(Pooled {
        model,
        folder,
        load_ms,
        fresh: true,
    })
}

/// The model when someone holds it loaded; never loads.
pub fn loaded(source: &ModelSource, dtype: Option<DType>, device: &Device) -> Option<Pooled> {
    find(&Key::new(source, dtype, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_qwen3vl_tied")
    }

    #[test]
    fn one_copy_while_held_and_a_fresh_load_after_the_last_holder() {
        let cpu = Device::Cpu;
        let source = ModelSource::Folder(fixture());
        // Another spelling of the same folder.
        let dotted = ModelSource::Folder(fixture().join("..").join("tiny_qwen3vl_tied"));
        let a = get_or_load(&source, Some(DType::F32), &cpu).unwrap();
        assert!(a.fresh);
        assert!(a.load_ms > 0.0);
        let b = get_or_load(&dotted, Some(DType::F32), &cpu).unwrap();
        assert!(!b.fresh, "the same folder is not loaded twice");
        assert!(Arc::ptr_eq(&a.model, &b.model));
        assert_eq!((a.folder.clone(), a.load_ms), (b.folder.clone(), b.load_ms));
        let c = get_or_load(&source, Some(DType::BF16), &cpu).unwrap();
        assert!(c.fresh, "another dtype is another model");
        assert!(!Arc::ptr_eq(&a.model, &c.model));
        assert!(loaded(&source, Some(DType::F32), &cpu).is_some());
        drop((a, b, c));
        assert!(
            loaded(&source, Some(DType::F32), &cpu).is_none(),
            "the pool keeps nothing alive"
        );
        assert!(get_or_load(&source, Some(DType::F32), &cpu).unwrap().fresh);
    }

    #[test]
    fn a_failed_load_leaves_nothing_behind() {
        let cpu = Device::Cpu;
        let missing = ModelSource::Folder(fixture().join("no-such-model"));
        assert!(get_or_load(&missing, None, &cpu).is_err());
        assert!(loaded(&missing, None, &cpu).is_none());
    }
}
