//! Tests against the running kernel, one file per feature: zctrace loads its
//! probes for real, moves real bytes, traces real programs, and the
//! counters it reports must land in honest ranges.
//!
//! Tests that load eBPF programs need root and are marked
//! `#[ignore = "needs root: ..."]`: `cargo xtask test` runs them as root
//! with `--include-ignored`, and without root they show as ignored, never
//! as passed.

mod accounting;
mod attach;
mod cli;
mod common;
mod dashboard;
mod demo;
mod metrics;
mod probes;
mod programs;
mod run;
mod top;
mod uring;
mod workshop;
