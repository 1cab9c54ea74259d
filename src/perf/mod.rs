//! The measurements behind the README's performance figures, each runnable from
//! `echo-workbench bench ...` (and all of them from `scripts/bench.sh`): vector
//! indexes and memory builds ([`index`]), the batch runner against the bound an
//! endpoint allows ([`runner`]), journals at scale ([`journal`]), CLIP
//! throughput ([`clip`]) and the anomaly map's speed ([`anomaly`]), each with
//! the CPU it ran on ([`cpu`]). Nothing in the app depends on this module.

pub mod anomaly;
pub mod clip;
pub mod cpu;
pub mod index;
pub mod journal;
pub mod runner;
