//! What every command owes its user: exit statuses, one-line errors,
//! nothing left attached in the kernel.

use crate::common::*;
use std::process::Command;

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn nothing_stays_attached_after_exit() {
    let _guard = serial();
    let count = || {
        let out = Command::new("bpftool")
            .args(["prog", "show"])
            .output()
            .expect("bpftool (cargo xtask setup installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter(|l| l.contains("name sys_enter") || l.contains("name sched_process_f"))
            .count()
    };
    let before = count();
    let out = zctrace(&["hooks"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("sys_enter") && listing.contains("attached"),
        "{listing}"
    );
    assert_eq!(count(), before, "programs left loaded after zctrace exited");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn non_root_gets_one_line_naming_the_privilege() {
    let _guard = serial();
    // Drop to nobody with no capabilities (setpriv is in util-linux).
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_zctrace"))
        .args(["demo", "--no-tui"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("CAP_BPF") && err.contains("root"), "{err}");
}

#[test]
fn bad_input_exits_2_with_a_one_line_reason() {
    let _guard = serial();
    for args in [
        &["demo", "--size", "0"][..],
        &["demo", "--size", "1x"],
        &["demo", "--methods", "carrier-pigeon"],
        &["demo", "--pace", "3h"],
    ] {
        let out = zctrace(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
    }
}
