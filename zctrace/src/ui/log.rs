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
            let bytes = if e.ret >= 0 {
                human_bytes(e.ret as u64)
            } else {
                format!("err {}", -e.ret)
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
