//! Benchmarking against MMAD: scoring answers exactly as MMAD's summary does.

pub mod compare;
pub mod export;
pub mod journal;
pub mod manifest;
pub mod merge;
pub mod perf;
pub mod run_folder;
pub mod score;
