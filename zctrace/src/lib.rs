//! zctrace: live eBPF accounting of data copies, mode switches and context
//! switches per I/O method.
//!
//! The library behind the `zctrace` binary, so the tests and every front
//! end (dashboard, text and JSON reports) call one API. One sample travels
//! one way: `probe` reads the kernel's counters, `sample` turns them into
//! model-level numbers (`model`), and the front ends (`app` + `ui`,
//! `trace`'s tables and JSON, `demo::report`) only present them.

pub mod app;
pub mod cgroup;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod hooks;
pub mod metrics;
pub mod model;
pub mod netdev;
pub mod preflight;
pub mod probe;
pub mod report;
pub mod sample;
pub mod top;
pub mod trace;
pub mod tui;
pub mod ui;
