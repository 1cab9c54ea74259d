//! Benchmarking against MMAD: batch runs (runner, journal, manifest, shards), scoring
//! exactly as MMAD's summary does, exports and merges.

pub mod compare;
pub mod export;
pub mod journal;
pub mod journal_bench;
pub mod journal_summary;
pub mod lock;
pub mod manifest;
pub mod merge;
pub mod perf;
pub mod rerun;
pub mod run_folder;
pub mod runner;
pub mod runner_bench;
pub mod score;
pub mod select;
