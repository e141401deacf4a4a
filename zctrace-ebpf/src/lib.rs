#![no_std]
// This file exists so that the package has a library target: zctrace's
// build script names the package as a build-dependency, which makes cargo
// rebuild zctrace when the eBPF sources change. The programs are in main.rs.
