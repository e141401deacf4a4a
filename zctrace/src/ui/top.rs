//! `zctrace top`'s first view: every process, ranked, and the selected
//! one's methods and flows.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Block, Paragraph, Row, Table, Widget, Wrap},
};

use crate::{
    app::App,
    model::human_bytes,
    top::{SortKey, TopProcess, human_rate},
};

pub struct TopTable<'a>(pub &'a App);

/// A column: header, width, the sort key it shows (if any), its cell.
struct Col {
    head: &'static str,
    width: u16,
    key: Option<SortKey>,
    cell: fn(&TopProcess) -> String,
    /// Shown only at least this wide.
    min_width: u16,
}

const COLS: &[Col] = &[
    Col {
        head: "PID",
        width: 7,
        key: Some(SortKey::Pid),
        cell: |p| p.pid.to_string(),
        min_width: 0,
    },
    Col {
        head: "COMM",
        width: 15,
        key: Some(SortKey::Comm),
        cell: |p| p.label(),
        min_width: 0,
    },
    Col {
        head: "COPY/s",
        width: 7,
        key: Some(SortKey::CopyRate),
        cell: |p| human_rate(p.per_second.cpu_copy_bytes),
        min_width: 0,
    },
    Col {
        head: "U>K/s",
        width: 7,
        key: Some(SortKey::UserToKernel),
        cell: |p| human_rate(p.per_second.user_to_kernel_bytes),
        min_width: 0,
    },
    Col {
        head: "K>U/s",
        width: 7,
        key: Some(SortKey::KernelToUser),
        cell: |p| human_rate(p.per_second.kernel_to_user_bytes),
        min_width: 0,
    },
    Col {
        head: "K>K/s",
        width: 7,
        key: None,
        cell: |p| human_rate(p.per_second.kernel_to_kernel_bytes),
        min_width: 100,
    },
    Col {
        head: "SYSC/s",
        width: 7,
        key: Some(SortKey::Syscalls),
        cell: |p| format!("{:.0}", p.per_second.syscalls),
        min_width: 0,
    },
    Col {
        head: "PGREF/s",
        width: 7,
        key: Some(SortKey::PageRefs),
        cell: |p| human_rate(p.per_second.page_ref_bytes),
        min_width: 0,
    },
    Col {
        head: "COPIED",
        width: 7,
        key: Some(SortKey::TotalCopies),
        cell: |p| human_bytes(p.total.cpu_copy_bytes()),
        min_width: 90,
    },
];

impl Widget for TopTable<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let Some(t) = app.top() else { return };
        let [table_area, detail] =
            Layout::vertical([Constraint::Min(5), Constraint::Length(6)]).areas(area);
        let cols: Vec<&Col> = COLS.iter().filter(|c| area.width >= c.min_width).collect();
        let list = t.list();
        let fit = usize::from(table_area.height.saturating_sub(3)).max(1);
        let first = app.selected.saturating_sub(fit - 1);
        let body = list.iter().enumerate().skip(first).take(fit).map(|(i, p)| {
            let mut cells: Vec<Line> = cols.iter().map(|c| aligned(c, (c.cell)(p))).collect();
            let methods: Vec<&str> = p.methods.iter().map(|m| m.name()).collect();
            cells.push(Line::from(format!(" {}", methods.join(","))));
            let row = Row::new(cells);
            if i == app.selected {
                row.style(Style::new().reversed())
            } else if !p.active {
                row.style(Style::new().dark_gray())
            } else {
                row
            }
        });
        let mut header: Vec<Line> = cols
            .iter()
            .map(|c| {
                let head = if c.key == Some(t.sort) {
                    format!("{}▼", c.head)
                } else {
                    c.head.to_owned()
                };
                aligned(c, head)
            })
            .collect();
        header.push(Line::from(" METHODS"));
        let mut widths: Vec<Constraint> =
            cols.iter().map(|c| Constraint::Length(c.width)).collect();
        widths.push(Constraint::Min(8));
        let mut title = format!(
            " {}: {} processes, sorted by {} ",
            t.target,
            list.len(),
            t.sort.name()
        );
        if !t.filter.is_empty() || t.editing {
            title += &format!(
                "| command ~ \"{}\"{} ",
                t.filter,
                if t.editing { "_" } else { "" }
            );
        }
        if let Some(m) = t.method {
            title += &format!("| method {} ", m.name());
        }
        Table::new(body, widths)
            .header(Row::new(header).style(Style::new().bold().underlined()))
            .block(Block::bordered().title(title))
            .render(table_area, buf);
        detail_panel(app, list.get(app.selected).copied()).render(detail, buf);
    }
}

/// Numbers to the right, the command name to the left.
fn aligned(c: &Col, s: String) -> Line<'static> {
    if c.head == "COMM" {
        Line::from(s)
    } else {
        Line::from(s).right_aligned()
    }
}

/// The selected process: its rows (method and flow) and the exited total.
fn detail_panel(app: &App, p: Option<&TopProcess>) -> Paragraph<'static> {
    let Some(t) = app.top() else {
        return Paragraph::new("");
    };
    let exited = format!(
        "exited since start: {} processes, {} CPU-copied",
        t.view.exited.processes,
        human_bytes(t.view.exited.total.cpu_copy_bytes())
    );
    let mut lines = Vec::new();
    match p {
        None => lines.push(Line::from("no process has made a traced syscall yet")),
        Some(p) => {
            lines.push(Line::from(vec![
                Span::styled(format!("{} (pid {})", p.comm, p.pid), Style::new().bold()),
                Span::raw(format!(
                    ": {} syscalls, {} CPU-copied, {} by page reference, {} moved since start",
                    p.total.syscalls,
                    human_bytes(p.total.cpu_copy_bytes()),
                    human_bytes(p.total.page_ref_bytes),
                    human_bytes(p.total.io_bytes)
                )),
            ]));
            let mut rows: Vec<&crate::trace::Row> = p.rows.iter().collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.measured.io_bytes));
            let parts: Vec<String> = rows
                .iter()
                .take(4)
                .map(|r| {
                    format!(
                        "{} {} {}",
                        r.method.name(),
                        r.flow(),
                        human_bytes(r.measured.io_bytes)
                    )
                })
                .collect();
            lines.push(Line::from(parts.join(" | ")));
        }
    }
    lines.push(Line::from(exited));
    Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(" s sort  / command  m method  Tab copy path "))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ratatui::crossterm::event::KeyCode;
    use zctrace_common::Method;

    use crate::{
        app::{App, AppEvent, tests::key},
        sample::Sample,
        top::{Ranker, tests::row},
        ui::tests::render,
    };

    fn top_app() -> App {
        let mut a = App::for_top(
            Vec::new(),
            "6.18.0-test".into(),
            "top: every process".into(),
            Duration::from_secs(1),
        );
        let t0 = Instant::now();
        let mut r = Ranker::new(t0);
        let view = r.update(
            [
                row(101, "cat", Method::ReadWrite, 1 << 20, 1 << 20),
                row(202, "dd", Method::ReadWrite, 64 << 20, 64 << 20),
                row(303, "nginx", Method::Sendfile, 0, 0),
            ],
            &[],
            t0 + Duration::from_secs(1),
        );
        a.update(AppEvent::Sample(Box::new(Sample {
            taken: t0,
            stats: crate::probe::Stats::default(),
            events: Vec::new(),
            copy_rate: Some(130 << 20),
            processes: Vec::new(),
            demo: None,
            top: Some(view),
        })));
        a
    }

    #[test]
    fn the_copier_is_first_and_the_screen_fits_80x24() {
        let a = top_app();
        let text = render(&a, 80, 24);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("1 Processes"), "{text}");
        assert!(
            lines[1].contains("top: every process: 3 processes, sorted by CPU copies/s"),
            "{text}"
        );
        assert!(lines[2].contains("COPY/s▼"), "{text}");
        assert!(
            lines[3].starts_with("│    202 dd ") && lines[3].contains(" 128.0M "),
            "{text}"
        );
        assert!(
            lines[4].contains("cat") && lines[5].contains("nginx"),
            "{text}"
        );
        assert!(
            text.contains("dd (pid 202): 2 syscalls, 128.0M CPU-copied"),
            "{text}"
        );
        assert!(text.contains("exited since start: 0 processes"), "{text}");
    }

    #[test]
    fn sort_filter_and_selection_follow_the_process() {
        let mut a = top_app();
        // Select cat (second), then sort by command: cat is first, still
        // selected.
        a.update(key(KeyCode::Down));
        assert_eq!(a.top().and_then(|t| t.pid), Some(101));
        for _ in 0..7 {
            a.update(key(KeyCode::Char('s')));
        }
        assert_eq!(a.top().map(|t| t.sort), Some(crate::top::SortKey::Comm));
        assert_eq!(a.selected, 0);
        assert_eq!(a.path_row(0).map(|r| r.pid), Some(101));
        // Filter by name: typing goes to the filter, not to the keys.
        a.update(key(KeyCode::Char('/')));
        for c in "ngq".chars() {
            a.update(key(KeyCode::Char(c)));
        }
        assert!(!a.quit, "q typed into the filter");
        a.update(key(KeyCode::Backspace));
        a.update(key(KeyCode::Enter));
        assert_eq!(a.row_count(), 1);
        let text = render(&a, 80, 24);
        assert!(text.contains("command ~ \"ng\""), "{text}");
        // Esc clears the filter, a second Esc quits.
        a.update(key(KeyCode::Esc));
        assert_eq!(a.row_count(), 3);
        assert!(!a.quit);
        // Method filter: the first method in name order.
        a.update(key(KeyCode::Char('m')));
        assert_eq!(a.row_count(), 2, "read-write");
        a.update(key(KeyCode::Char('m')));
        assert_eq!(a.row_count(), 1, "sendfile");
        a.update(key(KeyCode::Char('m')));
        assert_eq!(a.row_count(), 3, "all again");
        a.update(key(KeyCode::Esc));
        assert!(a.quit);
    }

    #[test]
    fn the_copy_path_is_the_selected_process_main_row() {
        let mut a = top_app();
        a.view = crate::app::View::Diagram;
        let text = render(&a, 80, 24);
        assert!(text.contains("read-write"), "{text}");
        assert!(text.contains("(dd)"), "{text}");
    }
}
