//! The handout against a real demo's JSON (saved from `zctrace demo
//! --json --size 16M` on Linux 6.18, tracepoint tier).

use super::*;

const SAVED: &str = include_str!("../../tests/fixtures/demo-6.18.json");

fn doc() -> Doc {
    Doc::parse(SAVED).expect("the saved demo parses")
}

fn after<'a>(html: &'a str, marker: &str) -> &'a str {
    element_text(html, marker).unwrap_or_else(|| panic!("{marker} not in the page"))
}

#[test]
fn every_method_of_the_json_has_a_row_a_diagram_and_its_numbers() {
    let d = doc();
    let page = html(&d).expect("render");
    let json: serde_json::Value = serde_json::from_str(SAVED).expect("json");
    for m in json["methods"].as_array().expect("methods") {
        let name = m["method"].as_str().expect("name");
        if m["sender"].is_null() {
            continue;
        }
        let row = &page[page
            .find(&format!("<tr data-method=\"{name}\">"))
            .unwrap_or_else(|| panic!("no row for {name}"))..];
        assert_eq!(
            after(row, "data-k=\"syscalls\""),
            m["sender"]["syscalls"].to_string(),
            "{name} syscalls"
        );
        assert_eq!(
            after(row, "data-k=\"mode_switches\""),
            m["sender"]["mode_switches"].to_string(),
            "{name} mode switches"
        );
        let chunks = m["chunks"].as_f64().expect("chunks");
        let per = m["sender"]["syscalls"].as_f64().expect("syscalls") / chunks;
        assert_eq!(
            after(row, "data-k=\"syscalls_per_chunk\""),
            format!("{per:.2}"),
            "{name} syscalls per chunk"
        );
        assert!(
            page.contains(&format!("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 600 380\" width=\"600\" height=\"380\" role=\"img\" aria-labelledby=\"t-{name}\"")),
            "{name}: no diagram"
        );
        assert!(page.contains(&format!("<section class=\"method\" id=\"{name}\">")));
    }
}

#[test]
fn read_write_arrows_carry_the_measured_bytes_and_grey_where_nothing_was_seen() {
    let d = doc();
    let rw = d
        .methods
        .iter()
        .find(|m| m.method == Method::ReadWrite)
        .expect("read-write");
    let svg = DiagramSvg::of(rw, d.file_size).render().expect("svg");
    let s = rw.sender.as_ref().expect("sender");
    let u2k = s.cpu_copy_bytes.user_to_kernel.value;
    assert!(u2k > 0);
    assert!(
        svg.contains(&format!(
            "data-hop=\"UserToSocket\" data-bytes=\"{u2k}\" data-class=\"cpu\""
        )),
        "{svg}"
    );
    // Loopback and a cached file: no DMA at either end, drawn grey.
    assert!(svg.contains("data-hop=\"SocketToNic\" data-bytes=\"0\" data-class=\"off\""));
    assert!(svg.contains("data-hop=\"DiskToCache\" data-bytes=\"0\" data-class=\"off\""));
    assert!(svg.contains("DMA: none seen"));
}

#[test]
fn the_user_mode_copy_is_drawn_as_inferred() {
    let d = doc();
    let mm = d
        .methods
        .iter()
        .find(|m| m.method == Method::MmapMemcpy)
        .expect("mmap-memcpy");
    let svg = DiagramSvg::of(mm, d.file_size).render().expect("svg");
    assert!(svg.contains("data-hop=\"UserCopy\" data-bytes=\"\" data-class=\"off\""));
    assert!(
        svg.contains("memcpy in user mode: unseen (16.0M inferred)"),
        "{svg}"
    );
}

#[test]
fn the_page_states_kernel_machine_tiers_interface_and_health() {
    let page = html(&doc()).expect("render");
    assert!(page.contains("Linux 6.18.44"));
    assert!(page.contains("tracepoint tier: 15 of 15 hooks attached"));
    assert!(page.contains("copy-site tier: 0 of 8 hooks attached"));
    assert!(
        page.contains("not attached: filemap_read"),
        "refusals listed"
    );
    assert!(page.contains("sending interface lo: loopback, no device and no DMA"));
    assert!(page.contains("AMD EPYC"));
    assert!(page.contains("id=\"health\""));
    // Self-contained: nothing is fetched.
    for fetch in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!page.contains(fetch), "{fetch}");
    }
}

#[test]
fn text_from_the_json_is_escaped() {
    let evil = SAVED.replacen(
        "\"kernel\": \"6.18",
        "\"kernel\": \"<script>x</script>6.18",
        1,
    );
    let page = html(&Doc::parse(&evil).expect("parse")).expect("render");
    assert!(!page.contains("<script>x"));
    assert!(page.contains("&#60;script&#62;x") || page.contains("&lt;script&gt;x"));
}

#[test]
fn timelines_dip_once_per_syscall() {
    let d = doc();
    let rw = d
        .methods
        .iter()
        .find(|m| m.method == Method::ReadWrite)
        .expect("read-write");
    let t = TimelineSvg::of(rw);
    // 4 switches per chunk: two trips into the kernel, each a down and an
    // up edge (4 points per dip after the start).
    assert_eq!(t.waves.len(), 2);
    for w in &t.waves {
        assert_eq!(w.d.matches(" L ").count(), 2 * 4 + 1, "{}", w.d);
    }
    let ring = d
        .methods
        .iter()
        .find(|m| m.method == Method::UringReadSend)
        .expect("ring");
    let t = TimelineSvg::of(ring);
    assert!(
        t.waves[1].note.contains("one trip into the kernel per"),
        "{}",
        t.waves[1].note
    );
}

#[test]
fn other_json_is_refused_in_one_line() {
    for bad in ["", "{}", "[1,2]", "not json"] {
        let e = Doc::parse(bad).expect_err(bad);
        assert!(format!("{e:#}").contains("demo --json"), "{bad}: {e:#}");
    }
}

#[test]
fn the_last_document_of_a_loop_is_used() {
    let two = format!(
        "{SAVED}\n{}",
        SAVED.replacen("\"cold\": false", "\"cold\": true", 1)
    );
    assert!(Doc::parse(&two).expect("parse").cold);
}
