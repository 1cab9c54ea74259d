//! Benchmarking against MMAD: scoring answers exactly as MMAD's summary does.

pub mod journal;
pub mod lock;
pub mod manifest;
pub mod perf;
pub mod runner;
pub mod runner_bench;
pub mod score;
pub mod select;
