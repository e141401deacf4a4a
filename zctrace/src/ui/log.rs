//! The event log: recent syscalls of the traced processes, newest last.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Rect},
    style::Style,
    widgets::{Block, Row, Table, Widget},
};

use crate::{app::App, model::human_bytes};

pub struct LogView<'a>(pub &'a App);

impl Widget for LogView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let visible = area.height.saturating_sub(3) as usize;
        let end = app.log.len().saturating_sub(app.log_scroll);
        let start = end.saturating_sub(visible);
        let first_ts = app.log_t0.unwrap_or(0);
        let rows = app.log.range(start..end).map(|e| {
            let bytes = if e.ret < 0 {
                format!("err {}", -e.ret)
            } else if e.counts_bytes {
                human_bytes(e.ret as u64)
            } else {
                // An address (mmap), a count of completions: no bytes.
                "-".to_owned()
            };
            Row::new(vec![
                format!("{:.3}", e.ts_ns.saturating_sub(first_ts) as f64 / 1e9),
                e.tid.to_string(),
                e.comm.clone(),
                e.what.clone(),
                e.method.name().to_owned(),
                e.fd.name().to_owned(),
                bytes,
                // 0: the call began before the log was opened (untimed).
                if e.dur_ns == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.1}", e.dur_ns as f64 / 1e3)
                },
            ])
        });
        let title = format!(
            " events: {} shown, {} dropped by the kernel{} (space pauses, PgUp/PgDn scroll) ",
            app.log.len(),
            app.stats.events_dropped,
            if app.paused { ", PAUSED" } else { "" }
        );
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(7),
                Constraint::Length(15),
                Constraint::Length(15),
                Constraint::Length(15),
                Constraint::Length(7),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(vec![
                "time s", "tid", "comm", "call", "method", "fd", "bytes", "us",
            ])
            .style(Style::new().bold().underlined()),
        )
        .block(Block::bordered().title(title))
        .render(area, buf);
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{buffer::Buffer, layout::Rect, style::Style, widgets::Widget};
    use zctrace_common::{FdKind, Method};

    use super::LogView;
    use crate::app::{LogEntry, tests::app};

    fn entry(what: &str, ret: i64, counts_bytes: bool, dur_ns: u64) -> LogEntry {
        LogEntry {
            ts_ns: 1_000_000_000 + dur_ns,
            tgid: 7,
            tid: 7,
            comm: "cat".into(),
            what: what.into(),
            method: Method::ReadWrite,
            ret,
            counts_bytes,
            fd: FdKind::File,
            dur_ns,
        }
    }

    #[test]
    fn bytes_are_shown_only_for_calls_that_return_a_byte_count() {
        let mut a = app();
        a.log_t0 = Some(1_000_000_000);
        // A read of 128 KiB, an mmap whose result is an address, a failed
        // read, and a call from before the log was opened (untimed).
        a.log.push_back(entry("read", 131_072, true, 1_500));
        a.log
            .push_back(entry("mmap", 0x7f12_3456_7000, false, 2_000));
        a.log.push_back(entry("read", -9, true, 3_000));
        a.log.push_back(entry("write", 4096, true, 0));
        let area = Rect::new(0, 0, 96, 7);
        let mut buf = Buffer::empty(area);
        LogView(&a).render(area, &mut buf);
        let mut expected = Buffer::with_lines([
            "┌ events: 4 shown, 0 dropped by the kernel (space pauses, PgUp/PgDn scroll) ───────────────────┐",
            "│time s   tid     comm            call            method          fd      bytes    us          │",
            "│0.000    7       cat             read            read-write      file    128.0K   1.5         │",
            "│0.000    7       cat             mmap            read-write      file    -        2.0         │",
            "│0.000    7       cat             read            read-write      file    err 9    3.0         │",
            "│0.000    7       cat             write           read-write      file    4.0K     -           │",
            "└──────────────────────────────────────────────────────────────────────────────────────────────┘",
        ]);
        expected.set_style(Rect::new(1, 1, 94, 1), Style::new().bold().underlined());
        assert_eq!(buf, expected);
    }
}
