//! Helpers the feature files share: running zctrace, reading its JSON,
//! scratch files, tmux sessions.

use std::{
    process::{Command, Output},
    sync::Mutex,
};

use serde_json::Value;

pub const MIB: f64 = 1024.0 * 1024.0;

/// One zctrace at a time: tests compare bpftool listings and timing-free
/// counts, and two loads at once would only blur the picture.
/// The probe tests also trace this test process with fork-following on, so
/// every test that forks from it (every zctrace it starts) runs alone.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the test to itself (see SERIAL); a panicked test does not poison
/// the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn zctrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args(args)
        .output()
        .expect("run zctrace")
}

/// Runs `zctrace demo --json` for the given methods on a 16 MiB file in
/// 64 KiB chunks (256 chunks) and returns the per-method objects.
pub fn demo(methods: &str) -> Vec<Value> {
    let _guard = serial();
    let out = zctrace(&[
        "demo",
        "--json",
        "--size",
        "16M",
        "--chunk",
        "64K",
        "--methods",
        methods,
    ]);
    assert!(
        out.status.success(),
        "zctrace demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("demo --json prints JSON");
    assert_eq!(doc["schema"], 2);
    assert_balanced(&doc["stats"]);
    assert_eq!(doc["file_size"], 16 << 20);
    let attached = doc["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .filter(|h| h["attached"] == true)
        .count();
    assert!(attached >= 2, "required hooks attached: {}", doc["hooks"]);
    doc["methods"].as_array().expect("methods").clone()
}

pub fn method<'a>(all: &'a [Value], name: &str) -> &'a Value {
    all.iter()
        .find(|m| m["method"] == name)
        .unwrap_or_else(|| panic!("no {name} in {all:?}"))
}

pub fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}

pub fn mib(v: &Value, path: &str) -> f64 {
    num(v, path) / MIB
}

pub fn assert_between(what: &str, v: f64, lo: f64, hi: f64) {
    assert!((lo..=hi).contains(&v), "{what} = {v}, expected {lo}..={hi}");
}

/// A scratch directory with a 32 MiB file of non-zero bytes.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

pub const SCRATCH_LEN: u64 = 32 << 20;

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..SCRATCH_LEN).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(dir.path().join("big.bin"), data).expect("write big.bin");
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// `zctrace run --json -o FILE -- argv`: exit status and final rows.
pub fn run_traced(s: &Scratch, argv: &[&str]) -> (Option<i32>, Vec<Value>) {
    let (code, last) = run_report(s, &[], argv);
    (code, last["rows"].as_array().expect("rows").clone())
}

/// `zctrace run --json -o FILE OPTIONS -- argv`: exit status and the final
/// report (rows and stats).
pub fn run_report(s: &Scratch, options: &[&str], argv: &[&str]) -> (Option<i32>, Value) {
    let _guard = serial();
    let report = s.path("report.jsonl");
    let mut args = vec!["run", "--json", "-o", &report];
    args.extend_from_slice(options);
    args.push("--");
    args.extend_from_slice(argv);
    let out = zctrace(&args);
    (out.status.code(), final_report(&report, &out))
}

pub fn final_rows(report: &str, out: &Output) -> Vec<Value> {
    final_report(report, out)["rows"]
        .as_array()
        .expect("rows")
        .clone()
}

/// The last JSON line of a run/attach report (the final one), its ledger
/// checked: every test that moves payload through `run` or `attach` checks
/// that what the hooks charged is in the rows.
pub fn final_report(report: &str, out: &Output) -> Value {
    let text = std::fs::read_to_string(report)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let last: Value =
        serde_json::from_str(text.lines().last().expect("a JSON line")).expect("JSON");
    assert_eq!(last["final"], true, "{last}");
    assert_eq!(last["schema"], 2, "{last}");
    assert!(last["ts"].as_f64().is_some_and(|t| t > 1.6e9), "{last}");
    assert_balanced(&last["stats"]);
    last
}

/// The ledger balances: for every payload hook, the bytes it charged are
/// in the rows (or in rows released since), to the byte.
pub fn assert_balanced(stats: &Value) {
    assert_eq!(stats["unaccounted_bytes"], 0, "ledger: {stats}");
    for a in stats["accounts"].as_array().expect("accounts") {
        assert_eq!(
            num(a, "charged"),
            num(a, "in_rows") + num(a, "released"),
            "ledger account {a}"
        );
        assert_eq!(
            num(a, "seen"),
            num(a, "charged") + num(a, "unattributed"),
            "ledger account {a}"
        );
    }
}

pub fn rows_of<'a>(rows: &'a [Value], comm: &str, method: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["comm"] == comm && r["method"] == method)
        .collect()
}

/// Starts `zctrace attach PID --json -o report` and returns once it is
/// attached: the report file appears after the probes are in and the PID
/// is in the traced set.
pub fn spawn_attach(pid: &str, report: &str) -> std::process::Child {
    let zc = Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args(["attach", pid, "--json", "-o", report, "--duration", "30s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("zctrace attach");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::path::Path::new(report).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "zctrace attach did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    zc
}

/// A shell that forks `cat big.bin` only once the test opens the FIFO "go"
/// for writing (after zctrace has attached: no timing guess), then runs
/// `tail`. The shell waits in its own `read` builtin, so nothing but the
/// cat (and `tail`) is forked for the dashboard to list.
pub fn gated_cat(s: &Scratch, tail: &str) -> std::process::Child {
    let (go, big) = (s.path("go"), s.path("big.bin"));
    let made = Command::new("mkfifo").arg(&go).status().expect("mkfifo");
    assert!(made.success());
    Command::new("sh")
        .args(["-c", &format!("read _ < {go}; cat {big} >/dev/null{tail}")])
        .spawn()
        .expect("spawn target")
}

/// A tmux session running zctrace; killed on drop.
pub struct Tmux {
    name: String,
}

impl Tmux {
    pub fn start(w: u16, h: u16, cmd: &str) -> Self {
        let name = format!("zctrace-test-{}-{w}x{h}", std::process::id());
        // CI runs with no terminal and maybe no TERM: tmux needs one to
        // describe its own.
        // The previous test's kill-session can leave a server that is
        // shutting down; a new session then fails once: try again.
        let start = || {
            Command::new("tmux")
                .env(
                    "TERM",
                    std::env::var("TERM")
                        .ok()
                        .filter(|t| !t.is_empty() && t != "dumb")
                        .unwrap_or_else(|| "xterm-256color".into()),
                )
                .args([
                    "new-session",
                    "-d",
                    "-s",
                    &name,
                    "-x",
                    &w.to_string(),
                    "-y",
                    &h.to_string(),
                ])
                .arg(format!("{cmd}; echo ZCTRACE_EXIT=$?; sleep 60"))
                .status()
                .expect("tmux (cargo xtask setup installs it)")
        };
        let mut status = start();
        for _ in 0..2 {
            if status.success() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            status = start();
        }
        assert!(status.success(), "tmux new-session failed 3 times");
        Tmux { name }
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("send-keys");
    }

    /// Polls the screen until `pred` holds (20 s at most).
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}:\n{s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn alternate_screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["display-message", "-p", "-t", &self.name, "#{alternate_on}"])
            .output()
            .expect("display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

/// nginx serving a scratch directory's big.bin on loopback (one process,
/// `sendfile` on or off), answering before this returns; killed on drop.
pub struct Nginx {
    pub child: std::process::Child,
    pub url: String,
}

impl Nginx {
    pub fn start(s: &Scratch, sendfile: bool) -> Nginx {
        let port = free_port();
        let prefix = s.path("");
        let conf = s.path(&format!("nginx-{sendfile}.conf"));
        std::fs::write(
            &conf,
            format!(
                "daemon off; master_process off; worker_processes 1;\n\
                 error_log {prefix}/nginx-error.log; pid {prefix}/nginx.pid;\n\
                 events {{ worker_connections 16; }}\n\
                 http {{ access_log off; sendfile {}; \n\
                   client_body_temp_path {prefix}; proxy_temp_path {prefix}; fastcgi_temp_path {prefix};\n\
                   uwsgi_temp_path {prefix}; scgi_temp_path {prefix};\n\
                   server {{ listen 127.0.0.1:{port}; root {prefix}; }} }}\n",
                if sendfile { "on" } else { "off" }
            ),
        )
        .expect("nginx.conf");
        let child = Command::new("nginx")
            .args(["-c", &conf, "-p", &prefix])
            .spawn()
            .expect("nginx (cargo xtask setup installs nginx-light)");
        let url = format!("http://127.0.0.1:{port}/big.bin");
        // Wait until it answers, so startup is not measured.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-r", "0-0", &url])
            .status()
            .map_or(true, |st| !st.success())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not come up on {url}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Nginx { child, url }
    }

    /// Stops it with SIGTERM (an attached zctrace then reports its end).
    pub fn stop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port nobody listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}
