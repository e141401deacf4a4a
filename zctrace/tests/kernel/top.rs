//! `zctrace top` and `--cgroup`: the whole machine, and one service.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;

/// JSON lines written by zctrace, parsed.
fn lines(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A file of `mib` MiB of non-zero bytes in the scratch directory.
fn big_file(s: &Scratch, name: &str, mib: u64) -> String {
    let p = s.path(name);
    let chunk: Vec<u8> = (0..1u64 << 20).map(|i| (i % 253) as u8 + 1).collect();
    let mut f = std::fs::File::create(&p).expect("create");
    for _ in 0..mib {
        std::io::Write::write_all(&mut f, &chunk).expect("write");
    }
    p
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn top_json_ranks_a_process_copying_320_mib_with_its_bytes() {
    let _guard = serial();
    let s = Scratch::new();
    let src = big_file(&s, "src.bin", 320);
    let report = s.path("top.jsonl");
    let mut top = Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args([
            "top",
            "--json",
            "--interval",
            "1s",
            "--duration",
            "6s",
            "-o",
        ])
        .arg(&report)
        .spawn()
        .expect("start top");
    // Give it time to load and take a first sample.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let dd = Command::new("dd")
        .args([
            format!("if={src}"),
            format!("of={}", s.path("dst.bin")),
            "bs=1M".into(),
            "status=none".into(),
        ])
        .spawn()
        .expect("dd");
    let pid = u64::from(dd.id());
    let done = dd.wait_with_output().expect("dd ran");
    assert!(done.status.success());
    assert!(top.wait().expect("top ends").success());
    let all = lines(&report);
    assert!(all.len() >= 4, "a line a second: {all:?}");
    for l in &all {
        assert_eq!(l["schema"], 2);
        assert_balanced(&l["stats"]);
    }
    assert_eq!(all.last().map(|l| &l["final"]), Some(&Value::Bool(true)));
    // dd in every line it was active in; its totals only grow, and the
    // line it exited in has its final numbers.
    let seen: Vec<&Value> = all
        .iter()
        .flat_map(|l| l["processes"].as_array().expect("processes"))
        .filter(|p| p["pid"].as_u64() == Some(pid))
        .collect();
    let last = seen
        .last()
        .unwrap_or_else(|| panic!("dd {pid} never listed: {all:?}"));
    assert_eq!(last["comm"], "dd");
    assert_eq!(last["exited"], true, "{last}");
    assert_eq!(last["methods"][0], "read-write", "{last}");
    let want = 320.0;
    assert_between(
        "dd kernel->user MiB",
        mib(last, "total.kernel_to_user_bytes"),
        want,
        want * 1.05,
    );
    assert_between(
        "dd user->kernel MiB",
        mib(last, "total.user_to_kernel_bytes"),
        want,
        want * 1.05,
    );
    // When it was busiest it led the ranking.
    let busiest = all
        .iter()
        .filter_map(|l| {
            let ps = l["processes"].as_array()?;
            let i = ps.iter().position(|p| p["pid"].as_u64() == Some(pid))?;
            Some((num(&ps[i], "per_second.cpu_copy_bytes"), i))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .expect("dd ranked");
    assert!(busiest.0 > 0.0);
    assert_eq!(busiest.1, 0, "dd first while it copied");
    // Exited processes are summed, and their rows released.
    let fin = all.last().expect("final");
    assert!(num(fin, "exited.processes") >= 1.0, "{fin}");
    assert!(
        mib(fin, "exited.total.kernel_to_user_bytes") >= want,
        "{fin}"
    );
}

/// A fresh cgroup v2 directory for one test, removed on drop.
struct TestCgroup {
    dir: String,
}

impl TestCgroup {
    fn new(tag: &str) -> Self {
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mount = info
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .and_then(|l| l.split_whitespace().nth(4))
            .expect("a cgroup v2 mount")
            .to_owned();
        let dir = format!("{mount}/zctrace-test-{tag}-{}", std::process::id());
        std::fs::create_dir_all(&dir).expect("mkdir cgroup");
        TestCgroup { dir }
    }

    fn add(&self, pid: u32) {
        std::fs::write(format!("{}/cgroup.procs", self.dir), pid.to_string()).expect("move");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Empty by now (its processes exited); rmdir is how cgroups go.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `sh -c 'read _ < FIFO; cat FILE > /dev/null'`: waits for a line.
fn waiting_cat(s: &Scratch, name: &str) -> (std::process::Child, String) {
    let go = s.path(name);
    assert!(
        Command::new("mkfifo")
            .arg(&go)
            .status()
            .expect("mkfifo")
            .success()
    );
    let big = s.path("big.bin");
    let child = Command::new("sh")
        .args(["-c", &format!("read _ < {go}; cat {big} >/dev/null")])
        .spawn()
        .expect("sh");
    (child, go)
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn cgroup_traces_a_process_moved_in_and_nothing_outside() {
    let _guard = serial();
    let s = Scratch::new();
    let cg = TestCgroup::new("attach");
    let (mut inside, go_in) = waiting_cat(&s, "go-in");
    let (mut outside, go_out) = waiting_cat(&s, "go-out");
    let report = s.path("cg.jsonl");
    let z = Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args(["attach", "--cgroup", &cg.dir, "--json", "-o", &report])
        .stderr(Stdio::piped())
        .spawn()
        .expect("attach");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Moved in after zctrace started: traced from its next syscall.
    cg.add(inside.id());
    for go in [&go_in, &go_out] {
        std::fs::write(go, "go\n").expect("release the cat");
    }
    assert!(inside.wait().expect("inside").success());
    assert!(outside.wait().expect("outside").success());
    // Removing the cgroup ends the attach.
    let dir = cg.dir.clone();
    drop(cg);
    assert!(
        !std::path::Path::new(&dir).exists(),
        "cgroup removed after its processes exited"
    );
    let out = z.wait_with_output().expect("attach ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fin = final_report(&report, &out);
    let rows = fin["rows"].as_array().expect("rows");
    let cats = rows_of(rows, "cat", "read-write");
    assert_eq!(cats.len(), 1, "only the cat inside: {rows:?}");
    assert_between(
        "inside cat MiB",
        mib(cats[0], "measured.cpu_copy_bytes.kernel_to_user.value"),
        32.0,
        32.2,
    );
    let outside_pids = [outside.id()];
    assert!(
        rows.iter()
            .all(|r| !outside_pids.contains(&(r["pid"].as_u64().unwrap_or(0) as u32))),
        "the shell outside is not traced: {rows:?}"
    );
    // Only processes of the cgroup: the inside shell and its cat.
    assert!(
        rows.iter().all(|r| r["comm"] == "sh" || r["comm"] == "cat"),
        "{rows:?}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn run_in_a_cgroup_starts_the_command_there_and_bad_cgroups_are_refused() {
    let _guard = serial();
    let s = Scratch::new();
    let cg = TestCgroup::new("run");
    let report = s.path("run.jsonl");
    let big = s.path("big.bin");
    let out = zctrace(&[
        "run",
        "--cgroup",
        &cg.dir,
        "--json",
        "-o",
        &report,
        "--",
        "sh",
        "-c",
        &format!("cat /proc/self/cgroup; cat {big} > /dev/null"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = cg.dir.rsplit('/').next().expect("name");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(name)),
        "the command ran inside the cgroup: {stdout}"
    );
    let fin = final_report(&report, &out);
    let rows = fin["rows"].as_array().expect("rows");
    let cat = rows_of(rows, "cat", "read-write");
    assert!(
        cat.iter().any(|r| mib(r, "measured.io_bytes") >= 32.0),
        "{rows:?}"
    );
    // A v1 or non-cgroup directory: one line, exit status 5.
    for bad in ["/tmp", "/no/such/cgroup"] {
        let out = zctrace(&["top", "--cgroup", bad, "--json", "--duration", "1s"]);
        assert_eq!(out.status.code(), Some(5), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("--cgroup"), "{err}");
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn top_in_tmux_shows_the_copier_first_and_quits_cleanly() {
    let _guard = serial();
    let s = Scratch::new();
    let big = s.path("big.bin");
    // A copier that runs until killed: cat of 32 MiB, over and over.
    let mut copier = Command::new("sh")
        .args(["-c", &format!("while :; do cat {big} > /dev/null; done")])
        .spawn()
        .expect("copier");
    let bin = env!("CARGO_BIN_EXE_zctrace");
    for quit in ["q", "C-c"] {
        let t = Tmux::start(80, 24, &format!("{bin} top"));
        let screen = t.wait_for("cat at the top", |s| {
            s.lines()
                .nth(3)
                .is_some_and(|l| l.contains(" cat") && l.contains("read-write"))
        });
        assert!(screen.contains("1 Processes"), "{screen}");
        assert!(screen.contains("COPY/s▼"), "{screen}");
        t.keys(&["?"]);
        t.wait_for("top's help", |s| s.contains("filter by command name"));
        t.keys(&["x", "2"]);
        t.wait_for("the copy path of cat", |s| {
            s.contains("user/kernel boundary") && s.contains("(cat")
        });
        t.keys(&[quit]);
        t.wait_for("a clean exit", |s| s.contains("ZCTRACE_EXIT=0"));
        assert_eq!(t.alternate_screen(), "0", "alternate screen left behind");
    }
    let _ = copier.kill();
    let _ = copier.wait();
}
