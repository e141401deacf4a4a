//! Workshop material: the HTML handout rendered by a real browser, the
//! demo sent to a `zctrace receive` in another network namespace over a
//! veth pair, the sending interface's offloads, and a stranger refused.

use std::{
    io::{Read as _, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium as the machine allows it (no sandbox as root, no
/// background connections on a closed network), with console messages
/// on stderr.
fn chromium(profile: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium (cargo xtask setup installs it)")
}

/// Every console message of the page (Chromium logs each as a `CONSOLE`
/// entry, errors and uncaught exceptions included, all at level INFO).
/// The handout has no script, so any message at all is a fault.
fn console_errors(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect()
}

/// A receiver's exit status and what it logged (its piped stderr).
fn exit_and_log(rx: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    let status = rx.wait().expect("receive exits");
    let mut log = String::new();
    rx.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("log");
    (status, log)
}

fn cell<'a>(html: &'a str, marker: &str) -> &'a str {
    zctrace::report::element_text(html, marker)
        .unwrap_or_else(|| panic!("{marker} not in the page"))
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_handout_renders_in_chromium_with_the_json_numbers() {
    let _guard = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let html = dir.path().join("handout.html");
    let svgs = dir.path().join("svg");
    let out = Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args(["demo", "--json", "--size", "16M", "--report"])
        .arg(&html)
        .arg("--svg")
        .arg(&svgs)
        .output()
        .expect("run zctrace demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // The same JSON, saved, gives the same page through `zctrace report`.
    let saved = dir.path().join("results.json");
    std::fs::write(&saved, &out.stdout).expect("save");
    let again = dir.path().join("again.html");
    let r = zctrace(&[
        "report",
        &saved.display().to_string(),
        "-o",
        &again.display().to_string(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        std::fs::read(&html).expect("handout"),
        std::fs::read(&again).expect("report"),
        "demo --report and report from its JSON make the same page"
    );

    // The browser's view of it: the DOM after parsing, and a screenshot.
    let profile = dir.path().join("profile");
    let url = format!("file://{}", html.display());
    let dom = chromium(&profile, &["--dump-dom", &url]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert_eq!(console_errors(&dom.stderr), Vec::<String>::new());
    let page = String::from_utf8(dom.stdout).expect("utf-8 DOM");
    let png = dir.path().join("handout.png");
    let shot = chromium(
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,4000",
            &url,
        ],
    );
    assert!(shot.status.success());
    assert_eq!(console_errors(&shot.stderr), Vec::<String>::new());
    let bytes = std::fs::read(&png).expect("screenshot");
    assert_eq!(&bytes[1..4], b"PNG");
    // Width and height from the IHDR chunk: the size asked for.
    let w = u32::from_be_bytes(bytes[16..20].try_into().expect("w"));
    let h = u32::from_be_bytes(bytes[20..24].try_into().expect("h"));
    assert_eq!((w, h), (1280, 4000));
    assert!(
        bytes.len() > 100_000,
        "a page of tables and diagrams, not blank"
    );

    // Every method's numbers in the parsed page equal the JSON's.
    let methods = doc["methods"].as_array().expect("methods");
    assert_eq!(methods.len(), 13, "every demo method");
    let mut svg_count = 0;
    for m in methods {
        let name = m["method"].as_str().expect("name");
        if m["sender"].is_null() {
            assert!(page.contains(&format!("id=\"{name}\"")), "{name} section");
            continue;
        }
        svg_count += 1;
        let row = &page[page
            .find(&format!("<tr data-method=\"{name}\">"))
            .unwrap_or_else(|| panic!("row {name}"))..];
        for key in ["syscalls", "mode_switches"] {
            assert_eq!(
                cell(row, &format!("data-k=\"{key}\"")),
                m["sender"][key].to_string(),
                "{name} {key}"
            );
        }
        // The arrows carry the exact bytes of the JSON.
        let section = &page[page
            .find(&format!("<section class=\"method\" id=\"{name}\">"))
            .expect("section")..];
        if name == "read-write" {
            let u2k = m["sender"]["cpu_copy_bytes"]["user_to_kernel"]["value"].to_string();
            assert!(
                section.contains(&format!("data-hop=\"UserToSocket\" data-bytes=\"{u2k}\"")),
                "read-write's second copy on its arrow"
            );
        }
        if name == "sendfile" {
            let refs = m["sender"]["page_ref_bytes"]["value"].to_string();
            assert!(section.contains(&format!("data-hop=\"CacheToSocket\" data-bytes=\"{refs}\"")));
        }
        let svg = std::fs::read_to_string(svgs.join(format!("{name}.svg"))).expect("svg file");
        assert!(
            svg.starts_with("<?xml") && svg.contains("</svg>"),
            "{name}.svg"
        );
    }
    assert_eq!(
        std::fs::read_dir(&svgs).expect("svg dir").count(),
        svg_count,
        "one diagram per method that ran"
    );
    // The memcpy in user mode is said to be inferred.
    assert!(page.contains("memcpy in user mode: unseen"));
    assert!(page.contains("sending interface lo: loopback"));
}

#[test]
#[ignore = "needs chromium: cargo xtask test installs it and runs it"]
fn the_console_check_sees_a_page_error() {
    // The check above could pass by never seeing anything: a page that
    // logs an error must be caught by the same filter.
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><script>console.error('zctrace-probe-error'); \
         undefined_function();</script></body></html>",
    )
    .expect("write");
    let out = chromium(
        &dir.path().join("profile"),
        &["--dump-dom", &format!("file://{}", page.display())],
    );
    let errors = console_errors(&out.stderr);
    assert!(
        errors.iter().any(|e| e.contains("zctrace-probe-error")),
        "{errors:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth pair, removed when dropped.
struct Veth {
    a: String,
    b: String,
}

impl Veth {
    const ADDR_A: &str = "10.231.7.1";
    const ADDR_B: &str = "10.231.7.2";

    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        let (a, b) = (format!("zct-a{tag}"), format!("zct-b{tag}"));
        let ip = |args: &[&str]| {
            let s = Command::new("ip").args(args).status().expect("run ip");
            assert!(s.success(), "ip {args:?}");
        };
        let v = Veth {
            a: a.clone(),
            b: b.clone(),
        };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&[
            "link", "add", "zct-va", "netns", &a, "type", "veth", "peer", "name", "zct-vb",
            "netns", &b,
        ]);
        for (ns, dev, addr) in [(&a, "zct-va", Self::ADDR_A), (&b, "zct-vb", Self::ADDR_B)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        v
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_zctrace")])
            .args(args);
        c
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and its peer.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn demo_to_a_receiver_across_a_veth_pair_is_checked_end_to_end() {
    let _guard = serial();
    let net = Veth::new();
    let listen = format!("{}:7007", Veth::ADDR_B);
    // read-write and sendfile one connection each, tee two.
    let mut rx = net
        .exec(
            &net.b,
            &["receive", "--listen", &listen, "--connections", "4"],
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("zctrace receive");
    let started = Instant::now();
    let out = loop {
        let out = net
            .exec(
                &net.a,
                &[
                    "demo",
                    "--json",
                    "--size",
                    "16M",
                    "--methods",
                    "read-write,sendfile,tee",
                    "--to",
                    &listen,
                ],
            )
            .output()
            .expect("zctrace demo --to");
        let err = String::from_utf8_lossy(&out.stderr);
        // The receiver may still be binding.
        if !out.status.success()
            && err.contains("Connection refused")
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        break out;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, log) = exit_and_log(&mut rx);
    assert!(status.success(), "{log}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["to"], listen.as_str());
    // The sending interface is the veth end, a software device.
    let dev = &doc["net_device"];
    assert_eq!(dev["name"], "zct-va", "{dev}");
    assert_eq!(dev["kind"], "virtual", "{dev}");
    assert_eq!(dev["driver"], "veth", "{dev}");
    assert!(dev["scatter_gather"].is_boolean(), "{dev}");
    // Four transfers of the whole payload arrived with the right CRC.
    let crc_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("16777216 of 16777216 bytes"))
        .collect();
    assert_eq!(crc_lines.len(), 4, "{log}");
    let crcs: std::collections::BTreeSet<&str> = crc_lines
        .iter()
        .filter_map(|l| l.split("crc32 ").nth(1)?.split(',').next())
        .collect();
    assert_eq!(crcs.len(), 1, "the same bytes every time: {log}");
    for m in doc["methods"].as_array().expect("methods") {
        let name = m["method"].as_str().expect("name");
        assert!(m["receiver"].is_null(), "{name}: the receiver is remote");
        // The veth transmits are seen, and counted as no-DMA transmits.
        assert_eq!(num(m, "sender.dma_bytes.nic"), 0.0, "{name}");
        assert!(num(m, "sender.loopback_bytes") > 0.0, "{name} transmits");
        let notes = m["notes"].to_string();
        assert!(notes.contains("software interface"), "{name}: {notes}");
    }
    let rw = method(doc["methods"].as_array().expect("m"), "read-write");
    assert_between(
        "read-write user->kernel MiB",
        mib(rw, "sender.cpu_copy_bytes.user_to_kernel.value"),
        15.9,
        16.1,
    );
    let sf = method(doc["methods"].as_array().expect("m"), "sendfile");
    assert!(sf["notes"].to_string().contains("zct-va (veth)"));
}

#[test]
fn the_receiver_refuses_a_client_that_does_not_speak_the_demo_protocol() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut rx = Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args(["receive", "--listen", &listen, "--connections", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("zctrace receive");
    let started = Instant::now();
    let mut c = loop {
        match std::net::TcpStream::connect(&listen) {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("receive never listened: {e}"),
        }
    };
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("ZCNO"), "{answer}");
    let (status, log) = exit_and_log(&mut rx);
    assert!(status.success(), "{log}");
    assert!(log.contains("refused, not the demo's protocol"), "{log}");
    // A port in use is one line and a failure.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let out = zctrace(&["receive", "--listen", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot listen"), "{err}");
}

#[test]
fn report_refuses_what_is_not_a_demo_json_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("x.json");
    std::fs::write(&bad, "{\"rows\": []}").expect("write");
    let out = zctrace(&["report", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("demo --json"), "{err}");
    let out = zctrace(&["report", "/nonexistent/zctrace.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
