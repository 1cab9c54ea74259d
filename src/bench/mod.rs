//! Benchmarking against MMAD: scoring answers exactly as MMAD's summary does.

pub mod compare;
pub mod journal;
pub mod manifest;
pub mod perf;
pub mod score;
