//! What every command owes its user: exit statuses, one-line errors,
//! nothing left attached in the kernel.

use crate::common::*;
use std::process::Command;

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn nothing_stays_attached_after_exit() {
    let _guard = serial();
    // The ids of zctrace-named programs loaded now. Ids only grow, so a
    // program this run loaded has an id not in the first listing; the
    // kernel frees a program shortly after its last reference goes (a
    // previous test's may still be on its way out), hence the wait.
    let ids = || -> std::collections::BTreeSet<u32> {
        let out = Command::new("bpftool")
            .args(["prog", "show"])
            .output()
            .expect("bpftool (cargo xtask setup installs it)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("name sys_enter") || l.contains("name sched_process_f"))
            .filter_map(|l| l.split(':').next()?.trim().parse().ok())
            .collect()
    };
    let before = ids();
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left: Vec<u32> = ids().difference(&before).copied().collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "programs {left:?} still loaded 5 s after zctrace exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
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
