//! Types and pure logic shared by zctrace's eBPF programs and its userspace,
//! one module per concern:
//!
//! - [`abi`]: what crosses the user/kernel boundary (map keys and values,
//!   events, statistics and configuration indexes, the layout and settings
//!   globals), `#[repr(C)]` with no implicit padding, sizes asserted at
//!   compile time in both builds;
//! - [`method`]: the classification of syscalls into I/O methods, the
//!   counter indexes and the observed/derived choice, plain `const fn`s the
//!   eBPF programs call in the kernel and the host tests call as they are;
//! - [`syscalls`]: syscall numbers per architecture;
//! - [`thread`]: the kernel-private per-thread state (userspace never
//!   reads it), kept here so its logic is unit-tested on the host.
#![no_std]

pub mod abi;
pub mod method;
pub mod syscalls;
pub mod thread;

pub use abi::*;
pub use method::*;
pub use thread::*;

#[cfg(test)]
mod tests;
