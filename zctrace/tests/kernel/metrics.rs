//! `--metrics`: a real Prometheus server scrapes zctrace.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::*;

/// `curl -s URL` (None when it fails).
fn get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every 250 ms for up to `secs` seconds.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A Prometheus server on 127.0.0.1 scraping `target` every second, with
/// its data in the scratch directory; killed on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
}

impl Prometheus {
    fn start(s: &Scratch, target: &str) -> Self {
        let port = free_port();
        let conf = s.path("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: zctrace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus.yml");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={conf}"))
            .arg(format!("--storage.tsdb.path={}", s.path("tsdb")))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(s.path("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus (cargo xtask setup installs it)");
        let url = format!("http://127.0.0.1:{port}");
        poll(30, "prometheus to be ready", || {
            get(&format!("{url}/-/ready"))
        });
        Prometheus { child, url }
    }

    /// An instant PromQL query's answer (None if Prometheus refused it).
    fn query(&self, query: &str) -> Option<Value> {
        let q: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect();
        let body = get(&format!("{}/api/v1/query?query={q}", self.url))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "success").then_some(v)
    }

    /// An instant PromQL query's first value.
    fn value(&self, query: &str) -> Option<f64> {
        let v = self.query(query)?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Whether its last scrape of zctrace succeeded.
    fn target_up(&self) -> bool {
        self.value("up{job=\"zctrace\"}") == Some(1.0)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn prometheus_scrapes_read_write_copies_of_nginx_serving_64_mib() {
    let _guard = serial();
    let s = Scratch::new();
    // A 64 MiB file next to big.bin, served with sendfile off: nginx
    // reads it into user memory and writes it to the socket.
    let chunk = std::fs::read(s.path("big.bin")).expect("big.bin");
    std::fs::write(
        s.path("big64.bin"),
        [chunk.as_slice(), chunk.as_slice()].concat(),
    )
    .expect("big64.bin");
    let mut nginx = Nginx::start(&s, false);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let z = Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args(["attach", &nginx.child.id().to_string(), "--metrics", &addr])
        .args(["--no-tui", "-o", &s.path("attach.txt")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("attach");
    let metrics_url = format!("http://{addr}/metrics");
    let first = poll(20, "zctrace's metrics endpoint", || get(&metrics_url));
    assert!(
        first.contains("# TYPE zctrace_cpu_copy_bytes_total counter"),
        "{first}"
    );
    let prom = Prometheus::start(&s, &addr);
    poll(20, "Prometheus to scrape zctrace", || {
        prom.target_up().then_some(())
    });
    let url = nginx.url.replace("big.bin", "big64.bin");
    // A one-byte request first, so the read-write series exist (at a few
    // bytes) before the download: a series born at its full value would
    // show no rate() in Prometheus.
    let warm = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-r", "0-0", &url])
        .status()
        .expect("curl");
    assert!(warm.success());
    poll(20, "the read-write series in Prometheus", || {
        prom.value("sum(zctrace_io_bytes_total{method=\"read-write\",comm=\"nginx\"})")
            .filter(|v| *v > 0.0)
    });
    let fetched = Command::new("curl")
        .args(["-sf", "-o", &s.path("got.bin"), &url])
        .status()
        .expect("curl");
    assert!(fetched.success());
    assert_eq!(
        std::fs::metadata(s.path("got.bin"))
            .expect("downloaded")
            .len(),
        64 << 20
    );
    // Read-write CPU copies, every direction, as Prometheus stored them:
    // 64 MiB page cache -> user buffer and 64 MiB user buffer -> socket.
    let want = 2.0 * 64.0 * MIB;
    let query = "sum(zctrace_cpu_copy_bytes_total{method=\"read-write\",comm=\"nginx\"})";
    let got = poll(20, "the copies in Prometheus", || {
        prom.value(query).filter(|v| *v >= want * 0.95)
    });
    assert_between(
        "read-write CPU copy MiB in Prometheus",
        got / MIB,
        128.0 * 0.95,
        128.0 * 1.05,
    );
    // By direction: each half of the copy.
    for dir in ["user_to_kernel", "kernel_to_user"] {
        let q = format!(
            "sum(zctrace_cpu_copy_bytes_total{{method=\"read-write\",comm=\"nginx\",direction=\"{dir}\"}})"
        );
        let v = prom.value(&q).expect(&q);
        assert_between(&format!("{dir} MiB"), v / MIB, 64.0 * 0.95, 64.0 * 1.05);
    }
    // The repository's Grafana dashboard: Prometheus accepts every one of
    // its queries, and the fleet panels see nginx.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/grafana/zctrace-fleet.json"
        ))
        .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push((
                p["title"].as_str().unwrap_or("").to_owned(),
                t["expr"].as_str().expect("expr").replace("$instance", ".*"),
            ));
        }
    }
    assert!(exprs.len() >= 7, "{exprs:?}");
    for (title, e) in &exprs {
        assert!(prom.query(e).is_some(), "Prometheus refused {title}: {e}");
    }
    let (_, top) = &exprs[0];
    poll(20, "nginx among the top copiers", || {
        let v = prom.query(top)?;
        let r = v["data"]["result"].as_array()?.clone();
        r.iter()
            .any(|s| s["metric"]["comm"] == "nginx")
            .then_some(())
    });
    let per_byte = exprs
        .iter()
        .find(|(t, _)| t.starts_with("CPU copies per byte"))
        .map(|(_, e)| e.clone())
        .expect("copies-per-byte panel");
    let ratio = poll(20, "read-write copies per byte", || {
        prom.query(&per_byte)?["data"]["result"]
            .as_array()?
            .iter()
            .find(|s| s["metric"]["method"] == "read-write")?["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()
    });
    // nginx returned every byte twice (read, write) and copied it twice.
    assert_between("read-write CPU copies per byte moved", ratio, 0.9, 1.1);
    // The example scrape configuration is valid.
    let cfg = Command::new("promtool")
        .args(["check", "config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/prometheus/prometheus.yml"
        ))
        .output()
        .expect("promtool");
    assert!(
        cfg.status.success(),
        "{}",
        String::from_utf8_lossy(&cfg.stdout)
    );
    // zctrace's own health is there, and nothing was lost.
    assert_eq!(prom.value("sum(zctrace_events_dropped_total)"), Some(0.0));
    assert_eq!(prom.value("sum(zctrace_row_fallbacks_total)"), Some(0.0));
    assert!(prom.value("zctrace_hooks{tier=\"tracepoint\",state=\"attached\"}") >= Some(2.0));
    // promtool accepts the exposition as served to it (classic text).
    let body = get(&metrics_url).expect("metrics");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(promtool.stdin.as_mut().expect("stdin"), body.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool ran");
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // nginx stopped: attach ends, and the endpoint goes with it.
    nginx.stop();
    let out = z.wait_with_output().expect("attach ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics at http://"));
    assert!(
        get(&metrics_url).is_none(),
        "nothing listens after zctrace exits"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn metrics_pid_labels_fold_exited_processes_and_a_busy_port_is_one_line() {
    let _guard = serial();
    let s = Scratch::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let big = s.path("big.bin");
    // Two cats in turn under run: each exits, so both end in pid="exited".
    let script = format!("cat {big} > /dev/null; cat {big} > /dev/null; sleep 3");
    let z = Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args(["run", "--metrics", &addr, "--metrics-pid", "--json", "-o"])
        .arg(s.path("run.jsonl"))
        .args(["--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let url = format!("http://{addr}/metrics");
    let body = poll(20, "both cats folded into pid=\"exited\"", || {
        let b = get(&url)?;
        let line = b.lines().find(|l| {
            l.starts_with("zctrace_cpu_copy_bytes_total{method=\"read-write\",comm=\"cat\",pid=\"exited\",direction=\"kernel_to_user\"}")
        })?;
        let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
        (v >= 64.0 * MIB).then_some(b)
    });
    assert!(
        !body
            .lines()
            .any(|l| l.contains("comm=\"cat\"") && !l.contains("pid=\"exited\"")),
        "no per-pid series left for exited cats:\n{body}"
    );
    assert!(
        body.contains("comm=\"sh\",pid=\""),
        "the live shell has its pid: {body}"
    );
    // A second zctrace on the same port: one line, non-zero exit.
    let out = zctrace(&["top", "--metrics", &addr, "--json", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("--metrics {addr}: cannot listen")),
        "{err}"
    );
    let out = z.wait_with_output().expect("run ends");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
