//! Run folders and everything that makes or reads them: the batch runner, the
//! journal and its summary, the manifest, the lock, the catalog of a workspace's
//! runs (listing, folder names, the trash), selection and shards, merging,
//! re-running a knowledge edit, comparing two runs, and the exports a run leaves
//! for others (which read a run folder, so they live here rather than in
//! [`crate::score`], which knows nothing of runs).

pub mod anomaly_metrics;
mod budget;
pub mod calibration;
pub mod catalog;
pub mod compare;
pub mod dispatch;
pub mod endpoint;
pub mod export;
pub mod journal;
pub mod journal_summary;
pub mod lock;
pub mod manifest;
pub mod merge;
mod report_sections;
pub mod rerun;
pub mod run_folder;
pub mod runner;
pub mod scheduler;
pub mod select;
pub mod slices;
pub mod spec;
pub mod usage;

#[cfg(test)]
pub(crate) mod test_support;
