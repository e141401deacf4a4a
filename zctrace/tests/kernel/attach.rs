//! `zctrace attach`: running processes and the children they fork.

use crate::common::*;

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn attach_follows_children_of_a_running_process() {
    let s = Scratch::new();
    let go = s.path("go");
    let _guard = serial();
    let mut target = gated_cat(&s, "");
    let pid = target.id().to_string();
    let report = s.path("attach.jsonl");
    let zc = spawn_attach(&pid, &report);
    std::fs::write(&go, b"").expect("go");
    assert!(target.wait().expect("wait").success());
    let out = zc.wait_with_output().expect("zctrace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = final_rows(&report, &out);
    let cats = rows_of(&rows, "cat", "read-write");
    assert_eq!(cats.len(), 1, "{rows:?}");
    assert_between(
        "cat MiB",
        mib(cats[0], "measured.cpu_copy_bytes.kernel_to_user.value"),
        32.0,
        32.2,
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn attach_refuses_bad_targets_with_one_line_and_status_5() {
    // `run` loads the probes before it finds the command missing.
    let _guard = serial();
    for (pid, words) in [("2", "kernel thread"), ("4194303", "no process")] {
        let out = zctrace(&["attach", pid]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{pid}: {err}");
        assert!(
            err.contains(words) && err.trim_end().lines().count() == 1,
            "{pid}: {err}"
        );
    }
    let out = zctrace(&["run", "--", "no-such-command-zc"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found"));
}
