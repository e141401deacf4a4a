//! The methods view: one row per method, theory next to measurement, and
//! the selected method's detail with the reasons they differ.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Row, Sparkline, Table, Widget, Wrap},
};

use crate::{
    app::{App, RunState},
    demo::MethodResult,
    model::{Source, human_bytes, ratio},
};

pub struct MethodsView<'a>(pub &'a App);

/// "theory / measured" with the measured part highlighted when it differs
/// from the textbook by more than a quarter.
fn cell(theory: Option<u32>, measured: Option<f64>) -> Line<'static> {
    let th = theory.map_or("-".to_owned(), |t| t.to_string());
    let Some(m) = measured else {
        return Line::from(format!("{th:>2} /    -"));
    };
    let differs = theory.is_some_and(|t| (m - f64::from(t)).abs() > 0.25 * f64::from(t).max(1.0));
    let style = if differs {
        Style::new().fg(Color::Yellow).bold()
    } else {
        Style::new().bold()
    };
    Line::from(vec![
        Span::raw(format!("{th:>2} / ")),
        Span::styled(format!("{m:>4.2}"), style),
    ])
}

impl Widget for MethodsView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let Some(opts) = app.demo_opts() else {
            trace_table(app, app.trace_rows().unwrap_or_default(), area, buf);
            return;
        };
        let wide = area.width >= 100;
        let table_h = (app.methods().len() as u16 + 3).min(area.height / 2 + 3);
        let [top, bottom] =
            Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(area);
        let results: Vec<Option<&MethodResult>> =
            (0..app.methods().len()).map(|i| app.result(i)).collect();
        let mut header = vec![
            "method", "", "MiB/s", "syscalls", "mode sw", "CPU cp/B", "DMA cp/B", "ctx v/i",
        ];
        if wide {
            header.push("page refs");
        }
        // The rows that fit (borders and header take three lines), scrolled
        // so that the selected method is always among them.
        let fit = usize::from(table_h.saturating_sub(3)).max(1);
        let first = app.selected.saturating_sub(fit - 1);
        let rows = app
            .methods()
            .iter()
            .zip(&results)
            .enumerate()
            .skip(first)
            .take(fit)
            .map(|(i, (m, r))| {
                let state = match &m.state {
                    RunState::Waiting => "wait".to_owned(),
                    RunState::Running => "run".to_owned(),
                    RunState::Done => "done".to_owned(),
                    RunState::Skipped(_) => "skip".to_owned(),
                };
                let th = r
                    .and_then(|r| r.theory)
                    .or_else(|| crate::model::theory::theory(m.method));
                let meas = r.and_then(|r| r.sender.map(|s| (r, s)));
                let per_chunk = |f: fn(&crate::model::Measured) -> u64| {
                    meas.as_ref().map(|(r, s)| ratio(f(s), r.chunks))
                };
                let per_byte = |f: fn(&crate::model::Measured, u64) -> f64| {
                    meas.as_ref().map(|(r, s)| f(s, r.bytes))
                };
                let mut cells = vec![
                    Line::from(m.method.name()),
                    Line::from(state),
                    Line::from(
                        meas.as_ref()
                            .map_or("-".into(), |(r, _)| format!("{:.0}", r.throughput_mib_s())),
                    ),
                    cell(th.map(|t| t.syscalls_per_chunk), per_chunk(|s| s.syscalls)),
                    cell(
                        th.map(|t| t.mode_switches_per_chunk),
                        per_chunk(|s| s.mode_switches),
                    ),
                    cell(
                        th.map(|t| t.cpu_copies),
                        per_byte(|s, b| s.cpu_copies_per_byte(b)),
                    ),
                    cell(
                        th.map(|t| t.dma_copies),
                        per_byte(|s, b| s.dma_copies_per_byte(b)),
                    ),
                    Line::from(meas.as_ref().map_or("-".into(), |(_, s)| {
                        format!(
                            "{}/{}",
                            s.context_switches.voluntary, s.context_switches.involuntary
                        )
                    })),
                ];
                if wide {
                    cells
                        .push(Line::from(meas.as_ref().map_or("-".into(), |(_, s)| {
                            human_bytes(s.page_ref_bytes.value)
                        })));
                }
                let row = Row::new(cells);
                if i == app.selected {
                    row.style(Style::new().reversed())
                } else {
                    row
                }
            });
        let mut widths = vec![
            Constraint::Length(15),
            Constraint::Length(4),
            Constraint::Length(5),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
        ];
        if wide {
            widths.push(Constraint::Length(10));
        }
        Table::new(rows, widths)
            .header(Row::new(header).style(Style::new().bold().underlined()))
            .block(Block::bordered().title(format!(
                " {} file, {} chunks: textbook / measured (yellow: differs) ",
                human_bytes(opts.size),
                human_bytes(opts.chunk as u64)
            )))
            .render(top, buf);
        let [detail_area, spark] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(3)]).areas(bottom);
        detail(app, results.get(app.selected).copied().flatten()).render(detail_area, buf);
        copy_sparkline(app).render(spark, buf);
    }
}

fn src(s: Source) -> &'static str {
    match s {
        Source::Observed => "observed",
        Source::Derived => "derived",
    }
}

/// The selected method: what moved where, and why it differs from theory.
fn detail(app: &App, r: Option<&MethodResult>) -> Paragraph<'static> {
    let Some(m) = app.selected_method() else {
        return Paragraph::new("no methods selected");
    };
    let title = format!(" {} ", m.method.name());
    let mut lines = Vec::new();
    if let RunState::Skipped(why) = &m.state {
        lines.push(Line::from(format!("skipped: {why}")));
    }
    if let Some(th) = crate::model::theory::theory(m.method) {
        lines.push(Line::from(vec![
            Span::styled("textbook: ", Style::new().bold()),
            Span::raw(th.path),
        ]));
    }
    match r.and_then(|r| r.sender.map(|s| (r, s))) {
        None => lines.push(Line::from("not run yet: numbers appear when it starts")),
        Some((r, s)) => {
            let c = &s.cpu_copy_bytes;
            lines.push(Line::from(format!(
                "CPU copies: user->kernel {} ({}), kernel->user {} ({}), kernel->kernel {} ({})",
                human_bytes(c.user_to_kernel.value),
                src(c.user_to_kernel.source),
                human_bytes(c.kernel_to_user.value),
                src(c.kernel_to_user.source),
                human_bytes(c.kernel_to_kernel.value),
                src(c.kernel_to_kernel.source)
            )));
            lines.push(Line::from(format!(
                "page references {} ({}), DMA disk {} / NIC {}, O_DIRECT {}, faults {} user / {} kernel",
                human_bytes(s.page_ref_bytes.value),
                src(s.page_ref_bytes.source),
                human_bytes(s.dma_bytes.disk_read + s.dma_bytes.disk_write),
                human_bytes(s.dma_bytes.nic),
                human_bytes(s.direct_io_bytes),
                s.page_faults_user,
                s.page_faults_kernel
            )));
            if let Some(rx) = &r.receiver {
                lines.push(Line::from(format!(
                    "receiver (not the method's): {} syscalls, kernel->user {}",
                    rx.syscalls,
                    human_bytes(rx.cpu_copy_bytes.kernel_to_user.value)
                )));
            }
            for n in &r.notes {
                lines.push(Line::from(vec![
                    Span::styled("* ", Style::new().fg(Color::Yellow)),
                    Span::raw(n.clone()),
                ]));
            }
        }
    }
    lines.push(Line::from(""));
    lines.extend(throughput_bars(app));
    Paragraph::new(lines)
        .block(Block::bordered().title(title))
        .wrap(Wrap { trim: true })
}

/// CPU-copy bytes per second across everything traced, one bar per
/// sample, newest on the right.
fn copy_sparkline(app: &App) -> Sparkline<'_> {
    let now = app.copy_rate.back().copied().unwrap_or(0);
    let peak = app.copy_rate.iter().copied().max().unwrap_or(0);
    Sparkline::default()
        .block(Block::bordered().title(format!(
            " CPU copies per second: {}/s now, {}/s peak (last minute) ",
            human_bytes(now),
            human_bytes(peak)
        )))
        .data(app.copy_rate.iter().copied())
        .style(Style::new().fg(Color::Red))
}

/// Throughput of each finished method as a bar.
fn throughput_bars(app: &App) -> Vec<Line<'static>> {
    let tp: Vec<(String, f64)> = (0..app.methods().len())
        .filter_map(|i| {
            let r = app.result(i)?;
            (app.methods()[i].state == RunState::Done)
                .then(|| (r.method.name().to_owned(), r.throughput_mib_s()))
        })
        .collect();
    let max = tp.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    if max <= 0.0 {
        return Vec::new();
    }
    let mut out = vec![Line::from(Span::styled(
        "throughput, MiB/s",
        Style::new().bold(),
    ))];
    for (name, v) in tp {
        let n = ((v / max) * 40.0).round() as usize;
        out.push(Line::from(vec![
            Span::raw(format!("{name:<15} ")),
            Span::styled("█".repeat(n.max(1)), Style::new().fg(Color::Cyan)),
            Span::raw(format!(" {v:.0}")),
        ]));
    }
    out
}

/// Attach/run: one row per (process, method), totals as counted.
fn trace_table(app: &App, rows: &[crate::trace::Row], area: Rect, buf: &mut Buffer) {
    let [top, bottom] = Layout::vertical([Constraint::Min(5), Constraint::Length(7)]).areas(area);
    // Mode switches and kernel-to-kernel copies only where there is room.
    let wide = area.width >= 100;
    let [top, spark] = Layout::vertical([Constraint::Min(0), Constraint::Length(3)]).areas(top);
    // Scrolled so that the selected row is among those that fit.
    let fit = usize::from(top.height.saturating_sub(3)).max(1);
    let first = app.selected.saturating_sub(fit - 1);
    let body = rows.iter().enumerate().skip(first).take(fit).map(|(i, r)| {
        let m = &r.measured;
        let c = &m.cpu_copy_bytes;
        let comm = r.label();
        let mut cells = vec![r.pid.to_string(), comm, r.method.name().to_owned()];
        if wide {
            cells.push(r.flow());
        }
        cells.push(m.syscalls.to_string());
        if wide {
            cells.push(m.mode_switches.to_string());
        }
        cells.push(human_bytes(c.user_to_kernel.value));
        cells.push(human_bytes(c.kernel_to_user.value));
        if wide {
            cells.push(human_bytes(c.kernel_to_kernel.value));
        }
        cells.push(human_bytes(m.page_ref_bytes.value));
        cells.push(human_bytes(m.io_bytes));
        let row = Row::new(cells);
        if i == app.selected {
            row.style(Style::new().reversed())
        } else {
            row
        }
    });
    let mut header = vec!["PID", "COMM", "METHOD"];
    let mut widths = vec![
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(15),
    ];
    if wide {
        header.push("FLOW");
        widths.push(Constraint::Length(13));
    }
    header.push("SYSCALLS");
    widths.push(Constraint::Length(8));
    if wide {
        header.push("MODE-SW");
        widths.push(Constraint::Length(8));
    }
    header.extend(["USER>K", "K>USER"]);
    widths.extend([Constraint::Length(7), Constraint::Length(7)]);
    if wide {
        header.push("K>K");
        widths.push(Constraint::Length(7));
    }
    header.extend(["PAGE-REF", "IO"]);
    widths.extend([Constraint::Length(8), Constraint::Length(7)]);
    Table::new(body, widths)
        .header(Row::new(header).style(Style::new().bold().underlined()))
        .block(Block::bordered().title(format!(" {} (* exited) ", app.target())))
        .render(top, buf);
    copy_sparkline(app).render(spark, buf);
    let text = match rows.get(app.selected) {
        None => vec![Line::from("no I/O seen yet")],
        Some(r) => {
            let m = &r.measured;
            let c = &m.cpu_copy_bytes;
            let mut v = vec![Line::from(format!(
                "{} {} in {} (pid {}): {} syscalls, {} mode switches, {}/{} context switches \
                 (vol/invol), {} kernel->kernel",
                r.method.name(),
                r.flow(),
                r.comm,
                r.pid,
                m.syscalls,
                m.mode_switches,
                m.context_switches.voluntary,
                m.context_switches.involuntary,
                human_bytes(c.kernel_to_kernel.value)
            ))];
            if let Some(th) = crate::model::theory::theory(r.method) {
                v.push(Line::from(vec![
                    Span::styled("textbook: ", Style::new().bold()),
                    Span::raw(th.path),
                ]));
                v.push(Line::from(format!(
                    "textbook per transfer: {} syscalls, {} CPU copies; here about {:.2} CPU copies per byte moved",
                    th.syscalls_per_chunk,
                    th.cpu_copies,
                    ratio(m.cpu_copy_total(), m.io_bytes / u64::from(th.syscalls_per_chunk.max(1)))
                )));
            }
            v
        }
    };
    Paragraph::new(text)
        .wrap(Wrap { trim: true })
        .block(Block::bordered())
        .render(bottom, buf);
}

#[cfg(test)]
mod tests {
    use crate::{
        app::tests::{app, app_with_read_write},
        ui::tests::render,
    };

    /// Before any sample: every method waits, the textbook numbers stand
    /// next to dashes, the first row is selected, nothing is invented.
    #[test]
    fn the_empty_methods_view_renders_exactly() {
        use ratatui::{buffer::Buffer, layout::Rect, style::Style, widgets::Widget};
        let a = app();
        let area = Rect::new(0, 0, 80, 14);
        let mut buf = Buffer::empty(area);
        super::MethodsView(&a).render(area, &mut buf);
        let mut want = Buffer::with_lines([
            "┌ 16.0M file, 64.0K chunks: textbook / measured (yellow: differs) ─────────────┐",
            "│method               MiB/s syscalls  mode sw   CPU cp/B  DMA cp/B  ctx v/i    │",
            "│read-write      wait -      2 /    -  4 /    -  2 /    -  2 /    - -          │",
            "│sendfile        wait -      1 /    -  2 /    -  0 /    -  2 /    - -          │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ read-write ──────────────────────────────────────────────────────────────────┐",
            "│textbook: disk =DMA=> page cache -CPU-> user buffer -CPU-> socket buffer      │",
            "│=DMA=> NIC                                                                    │",
            "│not run yet: numbers appear when it starts                                    │",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
            "┌ CPU copies per second: 0/s now, 0/s peak (last minute) ──────────────────────┐",
            "│                                                                              │",
            "└──────────────────────────────────────────────────────────────────────────────┘",
        ]);
        want.set_style(Rect::new(1, 1, 78, 1), Style::new().bold().underlined());
        want.set_style(Rect::new(1, 2, 78, 1), Style::new().reversed());
        want.set_style(Rect::new(1, 6, 10, 1), Style::new().bold());
        assert_eq!(buf, want);
    }

    /// Twelve methods in a table that fits seven: selecting the last one
    /// scrolls it into view, highlighted.
    #[test]
    fn the_selected_method_is_always_in_view() {
        use ratatui::{buffer::Buffer, layout::Rect, style::Modifier, widgets::Widget};
        let mut opts = crate::app::tests::opts();
        opts.methods = crate::demo::methods::DEMO_METHODS.to_vec();
        let mut a = crate::app::App::new(opts, Vec::new(), "k".into(), 1);
        a.selected = a.methods().len() - 1;
        let area = Rect::new(0, 0, 80, 14);
        let mut buf = Buffer::empty(area);
        super::MethodsView(&a).render(area, &mut buf);
        let line = |y: u16| -> String { (0..80).map(|x| buf[(x, y)].symbol()).collect() };
        // Border, header, then seven rows: the last seven methods.
        assert!(line(2).starts_with("│tee "), "{}", line(2));
        assert!(line(8).starts_with("│uring-send-zc "), "{}", line(8));
        assert!(buf[(1, 8)].modifier.contains(Modifier::REVERSED));
        assert!(!buf[(1, 7)].modifier.contains(Modifier::REVERSED));
        assert!(line(9).starts_with("└"), "{}", line(9));
    }

    #[test]
    fn empty_rows_show_theory_and_dashes() {
        let text = render(&app(), 80, 24);
        assert!(
            text.contains("read-write") && text.contains("wait"),
            "{text}"
        );
        assert!(
            text.contains(" 2 /    -"),
            "theory shown before any data:\n{text}"
        );
        assert!(text.contains("not run yet"), "{text}");
    }

    #[test]
    fn a_running_method_shows_measured_numbers() {
        let text = render(&app_with_read_write(), 80, 24);
        assert!(text.contains(" run "), "{text}");
        // 512 syscalls over 256 chunks; 32 MiB copied for 16 MiB sent.
        assert!(text.contains("2 / 2.00"), "{text}");
        assert!(text.contains("user->kernel 16.0M (derived)"), "{text}");
    }
}
