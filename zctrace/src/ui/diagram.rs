//! The copy-path diagram: disk, page cache, user buffer, socket buffer and
//! NIC, the user/kernel boundary, and one arrow per data movement of the
//! method, lit and labelled with the bytes the probes counted for it.

use ratatui::{
    buffer::Buffer,
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Widget},
};
use zctrace_common::{FdKind, Method};

use super::mech_style;
use crate::{
    app::App,
    model::{Measured, human_bytes, ratio, theory::theory},
};

/// How data crosses an arrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mech {
    Cpu,
    Dma,
    Refs,
}

impl Mech {
    pub const fn name(self) -> &'static str {
        match self {
            Mech::Cpu => "CPU copy",
            Mech::Dma => "DMA",
            Mech::Refs => "page refs",
        }
    }
}

/// The arrows of the classic picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopKind {
    DiskToCache,
    CacheToUser,
    UserToSocket,
    CacheToSocket,
    SocketToNic,
    DiskToUser,
    /// A copy in user mode, from one mapping to another: no probe sees it.
    UserCopy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub kind: HopKind,
    pub mech: Mech,
    /// Bytes the probes counted for this arrow (None: not measured yet).
    pub bytes: Option<u64>,
}

/// The textbook arrows of a method, with what was measured on each.
pub fn hops(m: Method, meas: Option<&Measured>) -> Vec<Hop> {
    use HopKind::*;
    let h = |kind, mech, f: fn(&Measured) -> u64| Hop {
        kind,
        mech,
        bytes: meas.map(f),
    };
    let disk = |s: &Measured| s.dma_bytes.disk_read;
    let nic = |s: &Measured| s.dma_bytes.nic;
    let refs = |s: &Measured| s.page_ref_bytes.value;
    match m {
        Method::ReadWrite | Method::UringReadSend => vec![
            h(DiskToCache, Mech::Dma, disk),
            h(CacheToUser, Mech::Cpu, |s| {
                s.cpu_copy_bytes.kernel_to_user.value
            }),
            h(UserToSocket, Mech::Cpu, |s| {
                s.cpu_copy_bytes.user_to_kernel.value
            }),
            h(SocketToNic, Mech::Dma, nic),
        ],
        Method::MmapWrite => vec![
            h(DiskToCache, Mech::Dma, disk),
            h(CacheToSocket, Mech::Cpu, |s| {
                s.cpu_copy_bytes.user_to_kernel.value
            }),
            h(SocketToNic, Mech::Dma, nic),
        ],
        Method::Sendfile | Method::Splice | Method::Tee | Method::UringSplice => vec![
            h(DiskToCache, Mech::Dma, disk),
            h(CacheToSocket, Mech::Refs, refs),
            h(SocketToNic, Mech::Dma, nic),
        ],
        Method::Vmsplice | Method::ZeroCopySend | Method::UringSendZc => vec![
            h(UserToSocket, Mech::Refs, refs),
            h(SocketToNic, Mech::Dma, nic),
        ],
        Method::CopyFileRange => vec![
            h(DiskToCache, Mech::Dma, disk),
            h(CacheToSocket, Mech::Cpu, |s| {
                s.cpu_copy_bytes.kernel_to_kernel.value
            }),
            h(SocketToNic, Mech::Dma, |s| s.dma_bytes.disk_write),
        ],
        Method::DirectIo => vec![
            h(DiskToUser, Mech::Dma, disk),
            h(UserToSocket, Mech::Cpu, |s| {
                s.cpu_copy_bytes.user_to_kernel.value
            }),
            h(SocketToNic, Mech::Dma, nic),
        ],
        Method::MmapMemcpy => vec![
            h(DiskToCache, Mech::Dma, disk),
            // Never measured: the copy runs in user mode.
            Hop {
                kind: UserCopy,
                mech: Mech::Cpu,
                bytes: None,
            },
            h(SocketToNic, Mech::Dma, |s| s.dma_bytes.disk_write),
        ],
        Method::SocketRecv
        | Method::SocketSend
        | Method::Other
        | Method::IoUring
        | Method::UringRead
        | Method::UringWrite
        | Method::UringSend
        | Method::UringRecv
        | Method::UringOther
        | Method::Fallback => Vec::new(),
    }
}

/// Where a vertical arrow runs: column x, rows top..=bottom.
#[derive(Clone, Copy)]
struct Column {
    x: u16,
    top: u16,
    bottom: u16,
    up: bool,
}

/// Mode switches per chunk: the textbook's and the measured.
pub type Switches = (Option<u32>, Option<f64>);

/// What it takes to draw one method's diagram.
pub struct DiagramParts {
    pub method: Method,
    pub hops: Vec<Hop>,
    pub switches: Switches,
    /// Attach/run: the row's flow, said in the title.
    pub note: Option<String>,
    /// Drawn the other way round: the source (a socket) on the left going
    /// up, the destination (a file) on the right going down: a download.
    pub reversed: bool,
}

/// One method's diagram.
pub struct Diagram<'a> {
    pub method: Method,
    pub hops: &'a [Hop],
    /// The arrow the step-through is talking about.
    pub focus: Option<HopKind>,
    /// Mode switches per chunk: theory and measured.
    pub switches: Switches,
    /// Said in the title, after the method (attach/run: the row's flow).
    pub note: Option<&'a str>,
    /// See [`DiagramParts::reversed`].
    pub reversed: bool,
}

const fn uses_user_buffer(m: Method) -> bool {
    matches!(
        m,
        Method::ReadWrite | Method::DirectIo | Method::Vmsplice | Method::ZeroCopySend
    )
}

/// What the diagram's five boxes are called for a method: the user-space
/// box (and whether the method uses it), the kernel buffers and the
/// hardware, left and right. Shared by the dashboard and the HTML report.
pub struct BoxNames {
    pub user: &'static str,
    pub user_active: bool,
    pub kernel: (&'static str, &'static str),
    pub hardware: (&'static str, &'static str),
}

impl BoxNames {
    pub fn of(m: Method, reversed: bool) -> Self {
        let files = matches!(m, Method::CopyFileRange | Method::MmapMemcpy);
        BoxNames {
            user: match m {
                Method::MmapWrite => "the file, mapped (page cache seen from user space)",
                Method::MmapMemcpy => "memcpy: source map ▶ copy map (unseen)",
                _ => "user buffer",
            },
            user_active: uses_user_buffer(m) || matches!(m, Method::MmapWrite | Method::MmapMemcpy),
            kernel: if files {
                ("page cache (source)", "page cache (copy)")
            } else if reversed {
                ("socket buffer", "page cache")
            } else {
                ("page cache", "socket buffer")
            },
            hardware: if files {
                ("disk", "disk")
            } else if reversed {
                ("NIC", "disk")
            } else {
                ("disk", "NIC")
            },
        }
    }
}

/// Draws a labelled box.
fn boxed(buf: &mut Buffer, r: Rect, label: &str, active: bool) {
    let style = if active {
        Style::new()
    } else {
        Style::new().fg(Color::DarkGray)
    };
    Block::bordered().border_style(style).render(r, buf);
    if r.height >= 3 {
        let inner = Rect {
            x: r.x + 1,
            y: r.y + r.height / 2,
            width: r.width.saturating_sub(2),
            height: 1,
        };
        Paragraph::new(Span::styled(label.to_owned(), style.bold()))
            .alignment(Alignment::Center)
            .render(inner, buf);
    }
}

fn put(buf: &mut Buffer, area: Rect, x: u16, y: u16, s: &str, style: Style) {
    if y >= area.bottom() || x >= area.right() {
        return;
    }
    let room = (area.right() - x) as usize;
    let text: String = s.chars().take(room).collect();
    buf.set_string(x, y, text, style);
}

impl Diagram<'_> {
    fn hop(&self, k: HopKind) -> Option<&Hop> {
        self.hops.iter().find(|h| h.kind == k)
    }

    fn style_of(&self, h: &Hop) -> Style {
        let lit = h.bytes.is_some_and(|b| b > 0);
        let s = mech_style(h.mech, lit);
        if self.focus == Some(h.kind) {
            s.reversed()
        } else {
            s
        }
    }

    fn label(h: &Hop) -> String {
        match h.bytes {
            None => h.mech.name().to_owned(),
            Some(b) => format!("{} {}", h.mech.name(), human_bytes(b)),
        }
    }

    /// A vertical arrow from row y0 to y1 (pointing up or down), labelled
    /// on its last-but-one row (clear of the boundary line).
    fn vertical(&self, buf: &mut Buffer, area: Rect, k: HopKind, col: Column) {
        let Column {
            x,
            top: y0,
            bottom: y1,
            up,
        } = col;
        let Some(h) = self.hop(k) else { return };
        let st = self.style_of(h);
        for y in y0..=y1 {
            let ch = if up && y == y0 {
                "▲"
            } else if !up && y == y1 {
                "▼"
            } else {
                "│"
            };
            put(buf, area, x, y, ch, st);
        }
        // Where the full label would run into the frame, the bytes alone.
        let room = area.right().saturating_sub(x + 2) as usize;
        let mut label = Self::label(h);
        if label.chars().count() > room
            && let Some(b) = h.bytes
        {
            label = human_bytes(b);
        }
        put(buf, area, x + 2, y1.saturating_sub(1).max(y0), &label, st);
    }
}

impl Widget for Diagram<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let block = Block::bordered().title(match self.note {
            Some(n) => format!(" {} {n} ", self.method.name()),
            None => format!(" {} ", self.method.name()),
        });
        let inner = block.inner(area);
        block.render(area, buf);
        if self.hops.is_empty() {
            Paragraph::new(
                "not a transfer method (opening files, waiting, bookkeeping, or a socket \
                 alone): there is no copy path to draw. Select another row with j/k.",
            )
            .wrap(ratatui::widgets::Wrap { trim: true })
            .render(inner, buf);
            return;
        }
        if inner.width < 44 || inner.height < 16 {
            // Too small for the picture: the arrows as a list.
            let lines: Vec<Line> = self
                .hops
                .iter()
                .map(|h| {
                    Line::from(Span::styled(
                        format!("{:?}: {}", h.kind, Self::label(h)),
                        self.style_of(h),
                    ))
                })
                .collect();
            Paragraph::new(lines).render(inner, buf);
            return;
        }
        let (x0, y0, w) = (inner.x, inner.y, inner.width);
        // Mode switches: one dip into the kernel per syscall of a chunk.
        let (th, me) = self.switches;
        let dips = th.map_or(0, |t| t / 2) as usize;
        let wave = format!("user {}", "▔▔╲▁▁╱".repeat(dips.max(1)));
        put(buf, inner, x0, y0, &wave, Style::new().fg(Color::Magenta));
        put(
            buf,
            inner,
            x0,
            y0 + 1,
            &format!(
                "mode switches per chunk: textbook {}, measured {}",
                th.map_or("-".into(), |t| t.to_string()),
                me.map_or("-".into(), |m| format!("{m:.2}"))
            ),
            Style::new().fg(Color::Magenta),
        );
        let y = y0 + 2;
        let bw = (w / 2).saturating_sub(4).min(24);
        let lx = x0 + w / 4;
        let rx = x0 + 3 * w / 4;
        let left = |yy: u16, h: u16| Rect {
            x: lx.saturating_sub(bw / 2),
            y: yy,
            width: bw,
            height: h,
        };
        let right = |yy: u16, h: u16| Rect {
            x: rx.saturating_sub(bw / 2),
            y: yy,
            width: bw,
            height: h,
        };
        // User space.
        put(buf, inner, x0, y, "user", Style::new().italic());
        let ub = Rect {
            x: lx.saturating_sub(4),
            y,
            width: (rx + 5).saturating_sub(lx.saturating_sub(4)).min(w),
            height: 3,
        };
        let names = BoxNames::of(self.method, self.reversed);
        boxed(buf, ub, names.user, names.user_active);
        // The boundary.
        let by = y + 4;
        put(
            buf,
            inner,
            x0,
            by,
            &"─".repeat(w as usize),
            Style::new().fg(Color::Gray),
        );
        // Centered between the two arrow columns, which cross the line.
        let label = " user/kernel boundary ";
        let lx_label = (x0 + w / 2).saturating_sub(label.len() as u16 / 2);
        put(
            buf,
            inner,
            lx_label,
            by,
            label,
            Style::new().fg(Color::Gray).italic(),
        );
        put(buf, inner, x0, by + 1, "kernel", Style::new().italic());
        // Kernel buffers.
        let (kl, kr) = names.kernel;
        let ky = y + 7;
        boxed(buf, left(ky, 3), kl, true);
        boxed(buf, right(ky, 3), kr, true);
        // Hardware.
        let hy = y + 12;
        put(buf, inner, x0, hy - 1, "hardware", Style::new().italic());
        let (hl, hr) = names.hardware;
        boxed(buf, left(hy, 3), hl, true);
        boxed(buf, right(hy, 3), hr, true);
        // Arrows.
        self.vertical(
            buf,
            inner,
            HopKind::DiskToCache,
            Column {
                x: lx,
                top: ky + 3,
                bottom: hy - 1,
                up: true,
            },
        );
        self.vertical(
            buf,
            inner,
            HopKind::CacheToUser,
            Column {
                x: lx,
                top: y + 3,
                bottom: ky - 1,
                up: true,
            },
        );
        self.vertical(
            buf,
            inner,
            HopKind::UserToSocket,
            Column {
                x: rx,
                top: y + 3,
                bottom: ky - 1,
                up: false,
            },
        );
        self.vertical(
            buf,
            inner,
            HopKind::SocketToNic,
            Column {
                x: rx,
                top: ky + 3,
                bottom: hy - 1,
                up: false,
            },
        );
        self.vertical(
            buf,
            inner,
            HopKind::DiskToUser,
            Column {
                x: lx.saturating_sub(2),
                top: y + 3,
                bottom: hy - 1,
                up: true,
            },
        );
        if let Some(h) = self.hop(HopKind::CacheToSocket) {
            let st = self.style_of(h);
            let (ax, bx) = (left(ky, 3).right(), right(ky, 3).x);
            let len = bx.saturating_sub(ax) as usize;
            if len >= 2 {
                put(
                    buf,
                    inner,
                    ax,
                    ky + 1,
                    &format!("{}▶", "─".repeat(len - 1)),
                    st,
                );
            }
            put(buf, inner, ax, ky + 2, &Self::label(h), st);
        }
    }
}

/// The diagram view: the selected method, next to read+write (the
/// four-copy baseline) or sendfile when the terminal is wide.
pub struct DiagramView<'a>(pub &'a App);

/// Builds the diagram inputs for method `index` of the app.
pub fn diagram_parts(app: &App, index: usize) -> Option<DiagramParts> {
    if app.demo_opts().is_none() {
        // Attach/run, top: the selected row's (process's) method, lit with
        // its totals.
        let r = app.path_row(index)?;
        let flow = r.flow();
        let textbook = matches!((r.source, r.destination), (FdKind::File, d) if d.is_socket())
            || flow == "-"
            || !uses_user_buffer(r.method);
        // A download (socket -> user buffer -> page cache) is drawn the
        // other way round; other flows are drawn as the textbook's.
        let download =
            r.method == Method::ReadWrite && r.source.is_socket() && r.destination == FdKind::File;
        let mut hops = hops(r.method, Some(&r.measured));
        if download {
            // The left column's DMA is the NIC's, the right one's the disk
            // write.
            for h in &mut hops {
                match h.kind {
                    HopKind::DiskToCache => h.bytes = Some(r.measured.dma_bytes.nic),
                    HopKind::SocketToNic => h.bytes = Some(r.measured.dma_bytes.disk_write),
                    _ => {}
                }
            }
        }
        return Some(DiagramParts {
            method: r.method,
            hops,
            switches: (theory(r.method).map(|t| t.mode_switches_per_chunk), None),
            note: Some(if textbook || download {
                format!("{flow} ({})", r.comm)
            } else {
                // Short: the title must fit 80 columns.
                format!("{flow} ({}), drawn as file>socket", r.comm)
            }),
            reversed: download,
        });
    }
    let m = app.methods().get(index)?.method;
    let r = app.result(index);
    let meas = r.and_then(|r| r.sender);
    let th = theory(m).map(|t| t.mode_switches_per_chunk);
    let me = r.and_then(|r| r.sender.map(|s| ratio(s.mode_switches, r.chunks)));
    Some(DiagramParts {
        method: m,
        hops: hops(m, meas.as_ref()),
        switches: (th, me),
        note: None,
        reversed: false,
    })
}

impl Widget for DiagramView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let [legend, body] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
        Paragraph::new(Line::from(vec![
            Span::styled("CPU copy", mech_style(Mech::Cpu, true)),
            Span::raw("  "),
            Span::styled("DMA", mech_style(Mech::Dma, true)),
            Span::raw("  "),
            Span::styled("page references", mech_style(Mech::Refs, true)),
            Span::raw("  "),
            Span::styled("grey: not seen (yet)", mech_style(Mech::Cpu, false)),
            Span::raw(if app.top().is_some() {
                "   j/k: process"
            } else {
                "   j/k: method"
            }),
        ]))
        .render(legend, buf);
        let mut shown = vec![app.selected];
        let wide_pair = app.demo_opts().is_some();
        let selected_is_rw = app
            .methods()
            .get(app.selected)
            .is_some_and(|m| m.method == Method::ReadWrite);
        let partner = if selected_is_rw {
            Method::Sendfile
        } else {
            Method::ReadWrite
        };
        if wide_pair
            && area.width >= 160
            && let Some(p) = app.methods().iter().position(|m| m.method == partner)
        {
            // The four-copy baseline always on the left.
            if selected_is_rw {
                shown.push(p)
            } else {
                shown.insert(0, p)
            }
        }
        let cols = Layout::horizontal(vec![Constraint::Fill(1); shown.len()]).split(body);
        for (i, col) in shown.iter().zip(cols.iter()) {
            if let Some(p) = diagram_parts(app, *i) {
                Diagram {
                    method: p.method,
                    hops: &p.hops,
                    focus: None,
                    switches: p.switches,
                    note: p.note.as_deref(),
                    reversed: p.reversed,
                }
                .render(*col, buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};

    use super::*;
    use crate::{
        app::{AppEvent, View, tests::app_with_read_write},
        ui::tests::render,
    };

    /// Attach/run: the copy path is the selected row's, lit with its
    /// totals, and a download says it is drawn in the textbook's direction.
    #[test]
    fn trace_rows_draw_their_method_with_their_flow_in_the_title() {
        let mut c = zctrace_common::Counters::ZERO;
        c.v[zctrace_common::counter::SYSCALLS] = 1024;
        c.v[zctrace_common::counter::K2U_DERIVED] = 32 << 20;
        c.v[zctrace_common::counter::U2K_DERIVED] = 32 << 20;
        let m = Measured::from_counters(&c, crate::model::HookSet::default());
        let row = crate::trace::Row {
            pid: 42,
            tid: None,
            comm: "curl".into(),
            exited: false,
            method: Method::ReadWrite,
            source: FdKind::Tcp,
            destination: FdKind::File,
            measured: m,
        };
        let mut a = App::for_trace(Vec::new(), "k".into(), "run curl".into());
        a.update(crate::app::tests::sample(None, vec![row], Vec::new()));
        a.view = View::Diagram;
        let screen = render(&a, 120, 30);
        assert!(screen.contains("read-write tcp>file (curl)"), "{screen}");
        assert!(!screen.contains("drawn as file>socket"), "{screen}");
        assert!(
            screen.contains("CPU copy 32.0M"),
            "the row's bytes on the arrows: {screen}"
        );
        // Drawn as a download: the socket buffer and the NIC on the left
        // (the source, arrows up), the page cache and the disk on the right.
        let left_of = |a: &str, b: &str| {
            screen
                .lines()
                .find(|l| l.contains(a) && l.contains(b))
                .is_some_and(|l| l.find(a) < l.find(b))
        };
        assert!(left_of("socket buffer", "page cache"), "{screen}");
        assert!(left_of("NIC", "disk"), "{screen}");
    }

    #[test]
    fn read_write_has_four_copies_and_sendfile_two() {
        assert_eq!(hops(Method::ReadWrite, None).len(), 4);
        let sf = hops(Method::Sendfile, None);
        assert_eq!(sf.len(), 3);
        assert_eq!(
            sf.iter().filter(|h| h.mech != Mech::Refs).count(),
            2,
            "two copies, both DMA"
        );
    }

    /// The whole picture of read+write, styles included: red (CPU copy)
    /// arrows lit with the bytes counted, grey DMA arrows where the probes
    /// saw 0, and a label that would run into the frame cut to its bytes.
    #[test]
    fn read_write_renders_exactly_with_lit_and_grey_arrows() {
        let mut c = zctrace_common::Counters::ZERO;
        c.v[zctrace_common::counter::SYSCALLS] = 512;
        c.v[zctrace_common::counter::K2U_DERIVED] = 16 << 20;
        c.v[zctrace_common::counter::U2K_DERIVED] = 16 << 20;
        let m = Measured::from_counters(&c, crate::model::HookSet::default());
        let hops = hops(Method::ReadWrite, Some(&m));
        let area = Rect::new(0, 0, 60, 22);
        let mut buf = Buffer::empty(area);
        Diagram {
            method: Method::ReadWrite,
            hops: &hops,
            focus: None,
            switches: (Some(4), Some(4.0)),
            note: None,
            reversed: false,
        }
        .render(area, &mut buf);
        let mut want = Buffer::with_lines([
            "┌ read-write ──────────────────────────────────────────────┐",
            "│user ▔▔╲▁▁╱▔▔╲▁▁╱                                         │",
            "│mode switches per chunk: textbook 4, measured 4.00        │",
            "│user      ┌────────────────────────────────────┐          │",
            "│          │             user buffer            │          │",
            "│          └────────────────────────────────────┘          │",
            "│              ▲                            │              │",
            "│──────────────│─── user/kernel boundary ───│──────────────│",
            "│kernel        │ CPU copy 16.0M             │ 16.0M        │",
            "│              │                            ▼              │",
            "│  ┌──────────────────────┐     ┌──────────────────────┐   │",
            "│  │      page cache      │     │     socket buffer    │   │",
            "│  └──────────────────────┘     └──────────────────────┘   │",
            "│              ▲ DMA 0                      │ DMA 0        │",
            "│hardware      │                            ▼              │",
            "│  ┌──────────────────────┐     ┌──────────────────────┐   │",
            "│  │         disk         │     │          NIC         │   │",
            "│  └──────────────────────┘     └──────────────────────┘   │",
            "│                                                          │",
            "│                                                          │",
            "│                                                          │",
            "└──────────────────────────────────────────────────────────┘",
        ]);
        let wave = Style::new().fg(Color::Magenta);
        let cpu = mech_style(Mech::Cpu, true);
        let grey = mech_style(Mech::Dma, false);
        let bold = Style::new().bold();
        let mut paint = |x0: u16, x1: u16, y: u16, st: Style| {
            want.set_style(Rect::new(x0, y, x1 - x0 + 1, 1), st);
        };
        paint(1, 17, 1, wave);
        paint(1, 50, 2, wave);
        paint(1, 4, 3, Style::new().italic());
        paint(25, 35, 4, bold);
        paint(1, 58, 7, Style::new().fg(Color::Gray));
        paint(19, 40, 7, Style::new().fg(Color::Gray).italic());
        for x in [15, 44] {
            for y in [6, 7, 8, 9] {
                paint(x, x, y, cpu);
            }
            paint(x, x, 13, grey);
            paint(x, x, 14, grey);
        }
        paint(17, 30, 8, cpu);
        paint(46, 50, 8, cpu);
        paint(17, 21, 13, grey);
        paint(46, 50, 13, grey);
        paint(10, 19, 11, bold);
        paint(38, 50, 11, bold);
        paint(13, 16, 16, bold);
        paint(43, 45, 16, bold);
        paint(1, 6, 8, Style::new().italic());
        paint(1, 8, 14, Style::new().italic());
        assert_eq!(buf, want);
    }

    #[test]
    fn the_diagram_draws_the_boundary_and_lit_arrows_with_bytes() {
        let mut a = app_with_read_write();
        a.update(AppEvent::Key(KeyEvent {
            code: KeyCode::Char('2'),
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        }));
        assert_eq!(a.view, View::Diagram);
        let text = render(&a, 80, 24);
        for want in [
            "user/kernel boundary",
            "page cache",
            "socket buffer",
            "NIC",
            "CPU copy 16.0M",
            "DMA 0",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        // Wide: read-write and sendfile side by side.
        let text = render(&a, 200, 60);
        assert!(
            text.contains(" read-write ") && text.contains(" sendfile "),
            "{text}"
        );
        assert!(text.contains("page refs"), "{text}");
    }
}
