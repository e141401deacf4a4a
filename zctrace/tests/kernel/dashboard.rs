//! The dashboard end to end, in tmux.

use crate::common::*;

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn dashboard_end_to_end_in_tmux() {
    let _guard = serial();
    let bin = env!("CARGO_BIN_EXE_zctrace");
    let t = Tmux::start(
        80,
        24,
        &format!("{bin} demo --size 8M --methods read-write,sendfile,splice"),
    );
    // Live numbers from the probes: read+write's 2 syscalls and 2 CPU
    // copies per chunk, sendfile's 0 copies.
    let s = t.wait_for("all methods done", |s| s.matches(" done ").count() >= 3);
    let row = |name: &str| {
        s.lines()
            .find(|l| l.contains(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row("read-write").contains("2 / 2.00"), "{s}");
    assert!(row("sendfile").contains("0 / 0.00"), "{s}");
    assert_eq!(t.alternate_screen(), "1");
    t.keys(&["2"]);
    t.wait_for("the copy-path diagram", |s| {
        s.contains("user/kernel boundary") && s.contains("CPU copy 8.0M")
    });
    t.keys(&["j", "3", "n"]);
    t.wait_for("step 2 of sendfile", |s| s.contains("step 2/5 of sendfile"));
    t.keys(&["?"]);
    t.wait_for("help", |s| s.contains(" keys ") && s.contains("Ctrl-C"));
    t.keys(&["x", "q"]);
    t.wait_for("a clean exit", |s| s.contains("ZCTRACE_EXIT=0"));
    assert_eq!(t.alternate_screen(), "0", "alternate screen left behind");
    let s = t.screen();
    assert!(
        !s.contains("┌"),
        "dashboard left on the normal screen:\n{s}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn dashboard_says_when_the_terminal_is_too_small_and_ctrl_c_quits() {
    let _guard = serial();
    let bin = env!("CARGO_BIN_EXE_zctrace");
    let t = Tmux::start(50, 12, &format!("{bin} demo --size 4M --methods sendfile"));
    t.wait_for("the too-small message", |s| {
        s.contains("terminal too small: 50x12")
    });
    t.keys(&["C-c"]);
    t.wait_for("a clean exit", |s| s.contains("ZCTRACE_EXIT=0"));
    assert_eq!(t.alternate_screen(), "0");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn attach_dashboard_shows_the_forked_child_and_quits_cleanly() {
    let s = Scratch::new();
    let go = s.path("go");
    let _guard = serial();
    let mut target = gated_cat(&s, "; sleep 1");
    let bin = env!("CARGO_BIN_EXE_zctrace");
    let t = Tmux::start(80, 24, &format!("{bin} attach {}", target.id()));
    t.wait_for("the dashboard", |s| s.contains("attached to"));
    std::fs::write(&go, b"").expect("go");
    t.wait_for("cat's read-write row", |s| {
        s.lines()
            .any(|l| l.contains("cat") && l.contains("read-write") && l.contains("32.0M"))
    });
    t.wait_for("the targets to exit", |s| {
        s.contains("every traced process has exited")
    });
    t.keys(&["q"]);
    t.wait_for("a clean exit", |s| s.contains("ZCTRACE_EXIT=0"));
    assert_eq!(t.alternate_screen(), "0");
    assert!(target.wait().expect("wait").success());
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_event_log_fills_only_while_it_is_on_screen() {
    let _guard = serial();
    let bin = env!("CARGO_BIN_EXE_zctrace");
    let t = Tmux::start(
        100,
        30,
        &format!("{bin} demo --loop --size 4M --methods read-write,sendfile"),
    );
    t.wait_for("the methods view", |s| s.contains(" done "));
    t.keys(&["4"]);
    // Syscall events of the demo's own threads, with their methods and fd
    // kinds; the window shows the newest ones, so look across screens.
    let (mut saw_sendfile, mut saw_file_read) = (false, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut s = String::new();
    while !(saw_sendfile && saw_file_read) {
        assert!(
            std::time::Instant::now() < deadline,
            "events missing from the log:\n{s}"
        );
        s = t.screen();
        // The fd column shows where the data comes from: the file.
        saw_sendfile |= s
            .lines()
            .any(|l| l.matches(" sendfile ").count() == 2 && l.contains(" file "));
        saw_file_read |= s
            .lines()
            .any(|l| l.contains(" read ") && l.contains("read-write") && l.contains("file"));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(s.contains("dropped by the kernel"), "{s}");
    t.keys(&["q"]);
    t.wait_for("a clean exit", |s| s.contains("ZCTRACE_EXIT=0"));
}
