//! Rendering. Every widget is `impl Widget for &View`-style and only reads
//! the [`App`]; nothing here does I/O or changes state.

pub mod diagram;
mod log;
mod methods;
pub mod narration;
mod top;

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph, Tabs, Widget, Wrap},
};

use crate::app::{App, View};

/// Smallest usable terminal.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// The whole screen.
pub struct Dashboard<'a>(pub &'a App);

impl Widget for Dashboard<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            let msg = format!(
                "terminal too small: {}x{}, zctrace needs at least {MIN_WIDTH}x{MIN_HEIGHT} (q quits)",
                area.width, area.height
            );
            Paragraph::new(msg)
                .wrap(Wrap { trim: true })
                .render(area, buf);
            return;
        }
        let [tabs, body, status] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        let selected = View::ALL.iter().position(|v| *v == app.view).unwrap_or(0);
        Tabs::new(View::ALL.iter().map(|v| match v {
            View::Methods if app.top().is_some() => "1 Processes",
            v => v.title(),
        }))
        .select(selected)
        .highlight_style(Style::new().reversed())
        .divider("|")
        .render(tabs, buf);
        match app.view {
            View::Methods if app.top().is_some() => top::TopTable(app).render(body, buf),
            View::Methods => methods::MethodsView(app).render(body, buf),
            View::Diagram => diagram::DiagramView(app).render(body, buf),
            View::Narration => narration::NarrationView(app).render(body, buf),
            View::Log => log::LogView(app).render(body, buf),
        }
        status_line(app).render(status, buf);
        if app.help {
            Help(app.top().is_some()).render(area, buf);
        }
    }
}

fn status_line(app: &App) -> Paragraph<'static> {
    let (tp, tp_all, _) = crate::probe::tier_summary(&app.hooks, crate::probe::Tier::Tracepoint);
    let (cs, cs_all, _) = crate::probe::tier_summary(&app.hooks, crate::probe::Tier::CopySite);
    let missing: Vec<&str> = app
        .hooks
        .iter()
        .filter(|h| !h.attached && h.tier == crate::probe::Tier::Tracepoint)
        .map(|h| h.name())
        .collect();
    let mut spans = vec![
        Span::styled(" zctrace ", Style::new().bold().reversed()),
        Span::raw(" ? help  q quit | "),
        Span::raw(format!(
            "tiers: tracepoint {tp}/{tp_all}{}, copy-site {cs}/{cs_all} | Linux {} | {} | dropped {} | every {} ms",
            if missing.is_empty() {
                String::new()
            } else {
                format!(" (missing {})", missing.join(","))
            },
            app.kernel,
            if app.target().is_empty() {
                format!("pid {}", app.pid)
            } else {
                app.target().to_owned()
            },
            app.stats.events_dropped,
            app.refresh.as_millis()
        )),
    ];
    if app.paused {
        spans.push(Span::styled(
            " PAUSED",
            Style::new().fg(Color::Yellow).bold(),
        ));
    }
    let st = &app.stats;
    if st.thread_map_full > 0 {
        spans.push(Span::styled(
            format!(
                " | {} threads uncounted: no memory for their state",
                st.thread_map_full
            ),
            Style::new().fg(Color::Red).bold(),
        ));
    }
    if st.unclassified_calls > 0 {
        spans.push(Span::styled(
            format!(
                " | {} calls counted unclassified (method other)",
                st.unclassified_calls
            ),
            Style::new().fg(Color::Red).bold(),
        ));
    }
    if st.counter_map_full > 0 {
        spans.push(Span::styled(
            format!(
                " | row map full: {} in map-full rows",
                crate::model::human_bytes(st.fallback.io_bytes)
            ),
            Style::new().fg(Color::Yellow).bold(),
        ));
    }
    if st.unattributed_bytes > 0 {
        spans.push(Span::raw(format!(
            " | unattributed {}",
            crate::model::human_bytes(st.unattributed_bytes)
        )));
    }
    if st.unaccounted_bytes != 0 {
        spans.push(Span::styled(
            format!(" | ledger off by {} B", st.unaccounted_bytes),
            Style::new().fg(Color::Red).bold(),
        ));
    }
    let uring = st.uring_unattributed_ops + st.uring_overflow_ops + st.uring_map_full;
    if uring > 0 {
        spans.push(Span::styled(
            format!(" | {uring} io_uring completions unattributed (see the report's stats)"),
            Style::new().fg(Color::Yellow).bold(),
        ));
    }
    if let Some(e) = app.error() {
        spans.push(Span::styled(
            format!(" error: {e}"),
            Style::new().fg(Color::Red),
        ));
    }
    Paragraph::new(Line::from(spans))
}

const HELP: &[(&str, &str)] = &[
    (
        "Tab / Shift-Tab, 1-4",
        "switch view: methods, copy path, step through, events",
    ),
    ("j k / Down Up", "select a method (scroll in the event log)"),
    (
        "n / Right, p / Left",
        "next / previous step in the step-through",
    ),
    ("space", "pause or resume the display"),
    ("r", "reset the counters shown (the kernel's are untouched)"),
    ("PgUp PgDn", "scroll the event log"),
    ("?", "this help (any key closes it)"),
    ("q, Esc, Ctrl-C", "quit"),
];

/// top's own keys, listed before the common ones.
const TOP_HELP: &[(&str, &str)] = &[
    (
        "s / S",
        "sort by the next / previous column (CPU copies/s first)",
    ),
    (
        "/",
        "filter by command name (Enter keeps it, Esc clears it)",
    ),
    ("m", "show only processes using the next method"),
    ("Esc", "clear the filters (then quit)"),
];

/// The help overlay (with top's keys when true).
struct Help(bool);

impl Widget for Help {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let keys: Vec<&(&str, &str)> = if self.0 {
            TOP_HELP.iter().chain(HELP).collect()
        } else {
            HELP.iter().collect()
        };
        let w = area.width.saturating_sub(4).min(76);
        let h = (keys.len() as u16 + 4).min(area.height);
        let popup = Rect {
            x: area.x + (area.width.saturating_sub(w)) / 2,
            y: area.y + (area.height.saturating_sub(h)) / 2,
            width: w,
            height: h,
        };
        Clear.render(popup, buf);
        let lines: Vec<Line> = keys
            .iter()
            .map(|(k, v)| {
                Line::from(vec![
                    Span::styled(format!("{k:<24}"), Modifier::BOLD),
                    Span::raw(*v),
                ])
            })
            .collect();
        Paragraph::new(lines)
            .block(Block::bordered().title(" keys "))
            .wrap(Wrap { trim: true })
            .render(popup, buf);
    }
}

/// Shared style for one kind of data movement.
pub fn mech_style(mech: diagram::Mech, lit: bool) -> Style {
    if !lit {
        return Style::new().fg(Color::DarkGray);
    }
    match mech {
        diagram::Mech::Cpu => Style::new().fg(Color::Red).bold(),
        diagram::Mech::Dma => Style::new().fg(Color::Blue).bold(),
        diagram::Mech::Refs => Style::new().fg(Color::Green).bold(),
    }
}

#[cfg(test)]
pub mod tests {
    use ratatui::{buffer::Buffer, layout::Rect, widgets::Widget};

    use super::*;
    use crate::app::tests::{app, app_with_read_write};

    /// Renders the dashboard into a w x h buffer and returns its text.
    pub fn render(app: &App, w: u16, h: u16) -> String {
        let area = Rect::new(0, 0, w, h);
        let mut buf = Buffer::empty(area);
        Dashboard(app).render(area, &mut buf);
        let mut out = String::new();
        for y in 0..h {
            for x in 0..w {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn a_small_terminal_gets_a_message_not_garbage() {
        let area = Rect::new(0, 0, 40, 4);
        let mut buf = Buffer::empty(area);
        Dashboard(&app()).render(area, &mut buf);
        assert_eq!(
            buf,
            Buffer::with_lines([
                "terminal too small: 40x4, zctrace needs ",
                "at least 60x16 (q quits)                ",
                "                                        ",
                "                                        ",
            ])
        );
    }

    #[test]
    fn every_view_renders_with_no_data_at_80x24_and_200x60() {
        for (w, h) in [(80, 24), (200, 60), (MIN_WIDTH, MIN_HEIGHT)] {
            for v in View::ALL {
                let mut a = app();
                a.view = v;
                let text = render(&a, w, h);
                assert!(text.contains("zctrace"), "{v:?} {w}x{h}:\n{text}");
            }
        }
    }

    #[test]
    fn help_lists_every_key() {
        let mut a = app_with_read_write();
        a.help = true;
        let text = render(&a, 100, 30);
        for k in ["Tab", "space", "Ctrl-C", "reset the counters"] {
            assert!(text.contains(k), "{k} missing:\n{text}");
        }
    }

    #[test]
    fn status_line_declares_unattributed_io_uring_work() {
        let mut a = app_with_read_write();
        let plain = render(&a, 200, 24);
        assert!(!plain.contains("io_uring"), "{plain}");
        a.stats.uring_overflow_ops = 3;
        a.stats.uring_unattributed_ops = 2;
        let text = render(&a, 200, 24);
        let last = text.lines().nth(23).expect("status line");
        assert!(
            last.contains("5 io_uring completions unattributed"),
            "{last}"
        );
    }

    #[test]
    fn status_line_shows_hooks_kernel_and_drops() {
        let mut a = app_with_read_write();
        a.stats.events_dropped = 17;
        let text = render(&a, 120, 24);
        let last = text.lines().nth(23).expect("status line");
        assert!(
            last.contains("Linux 6.18.0-test") && last.contains("dropped 17"),
            "{last}"
        );
    }
}
