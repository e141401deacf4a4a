//! Real servers zctrace did not write.

use crate::common::*;
use serde_json::Value;
use std::process::Command;

/// Serves `s`'s big.bin with Debian's nginx (one process, loopback only)
/// and downloads it once with curl while `zctrace attach` watches the
/// server by PID. Returns the server's final rows.
fn nginx_download(s: &Scratch, sendfile: bool) -> Vec<Value> {
    let mut server = Nginx::start(s, sendfile);
    let url = server.url.clone();
    let report = s.path(&format!("nginx-{sendfile}.jsonl"));
    let pid = server.child.id().to_string();
    let zc = spawn_attach(&pid, &report);
    let got = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{size_download}", &url])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        SCRATCH_LEN.to_string(),
        "downloaded bytes"
    );
    // Stop the server: attach reports its final numbers when it exits.
    server.stop();
    let out = zc.wait_with_output().expect("zctrace");
    assert!(out.status.success());
    final_rows(&report, &out)
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn nginx_is_sendfile_with_sendfile_on_and_read_write_with_it_off() {
    let _guard = serial();
    let s = Scratch::new();
    let rows = nginx_download(&s, true);
    let sf = rows_of(&rows, "nginx", "sendfile");
    assert_eq!(sf.len(), 1, "sendfile on: {rows:?}");
    assert_between(
        "page refs MiB",
        mib(sf[0], "measured.page_ref_bytes.value"),
        32.0,
        32.1,
    );
    assert!(
        rows_of(&rows, "nginx", "read-write")
            .iter()
            .all(|r| mib(r, "measured.io_bytes") < 1.0),
        "{rows:?}"
    );

    let rows = nginx_download(&s, false);
    assert!(
        rows_of(&rows, "nginx", "sendfile").is_empty(),
        "sendfile off: {rows:?}"
    );
    let rw = rows_of(&rows, "nginx", "read-write");
    assert_eq!(rw.len(), 1, "sendfile off: {rows:?}");
    assert_between(
        "kernel->user MiB",
        mib(rw[0], "measured.cpu_copy_bytes.kernel_to_user.value"),
        32.0,
        32.2,
    );
    assert_between(
        "user->kernel MiB",
        mib(rw[0], "measured.cpu_copy_bytes.user_to_kernel.value"),
        32.0,
        32.2,
    );
}
