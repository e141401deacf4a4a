//! The handout's pictures: a method's copy path (the dashboard's diagram,
//! with the measured bytes on every arrow) and its mode-switch timeline,
//! laid out here and drawn by the SVG templates.

use askama::Template;
use zctrace_common::Method;

use super::MethodDoc;
use crate::{
    model::{human_bytes, ratio},
    ui::diagram::{BoxNames, Hop, HopKind, Mech, hops},
};

/// A labelled box of the diagram.
pub struct SvgBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub label: &'static str,
    pub active: bool,
}

/// One arrow: where it runs, how it is coloured, what it says.
pub struct SvgArrow {
    pub hop: String,
    pub x1: u32,
    pub y1: u32,
    pub x2: u32,
    pub y2: u32,
    /// `cpu`, `dma`, `refs`, or `off` (grey: nothing was seen).
    pub class: &'static str,
    pub label: String,
    pub lx: u32,
    pub ly: u32,
    pub anchor: &'static str,
    /// Exact bytes measured on it (empty when it cannot be measured).
    pub bytes: String,
}

#[derive(Template)]
#[template(path = "diagram.svg", escape = "html")]
pub struct DiagramSvg {
    pub method: &'static str,
    pub title: String,
    pub subtitle: String,
    pub boxes: Vec<SvgBox>,
    pub arrows: Vec<SvgArrow>,
}

/// Where each arrow runs (600 x 380 canvas): the left column rises from
/// the disk through the page cache to the user buffer, the right one falls
/// from the user buffer through the socket buffer to the NIC.
const fn geometry(k: HopKind) -> (u32, u32, u32, u32, u32, u32, &'static str) {
    match k {
        HopKind::DiskToCache => (140, 290, 140, 204, 150, 252, "start"),
        HopKind::CacheToUser => (140, 150, 140, 108, 150, 136, "start"),
        HopKind::UserToSocket => (460, 106, 460, 146, 470, 136, "start"),
        HopKind::SocketToNic => (460, 202, 460, 286, 470, 252, "start"),
        HopKind::CacheToSocket => (250, 175, 346, 175, 298, 196, "middle"),
        HopKind::DiskToUser => (80, 290, 80, 108, 90, 252, "start"),
        HopKind::UserCopy => (170, 82, 426, 82, 298, 100, "middle"),
    }
}

fn arrow(h: &Hop, payload: u64) -> SvgArrow {
    let (x1, y1, x2, y2, lx, ly, anchor) = geometry(h.kind);
    let lit = h.bytes.is_some_and(|b| b > 0);
    let class = match (lit, h.mech) {
        (false, _) => "off",
        (true, Mech::Cpu) => "cpu",
        (true, Mech::Dma) => "dma",
        (true, Mech::Refs) => "refs",
    };
    let label = match (h.kind, h.bytes) {
        (HopKind::UserCopy, _) => format!(
            "memcpy in user mode: unseen ({} inferred)",
            human_bytes(payload)
        ),
        (_, Some(0)) => format!("{}: none seen", h.mech.name()),
        (_, Some(b)) => format!("{} {}", h.mech.name(), human_bytes(b)),
        (_, None) => format!("{}: not measured", h.mech.name()),
    };
    SvgArrow {
        hop: format!("{:?}", h.kind),
        x1,
        y1,
        x2,
        y2,
        class,
        label,
        lx,
        ly,
        anchor,
        bytes: h.bytes.map_or_else(String::new, |b| b.to_string()),
    }
}

impl DiagramSvg {
    pub fn of(m: &MethodDoc, payload: u64) -> Self {
        let names = BoxNames::of(m.method, false);
        let b = |x, y, w, h, label, active| SvgBox {
            x,
            y,
            w,
            h,
            label,
            active,
        };
        let boxes = vec![
            b(60, 40, 480, 66, names.user, names.user_active),
            b(30, 150, 220, 52, names.kernel.0, true),
            b(350, 150, 220, 52, names.kernel.1, true),
            b(30, 290, 220, 52, names.hardware.0, true),
            b(350, 290, 220, 52, names.hardware.1, true),
        ];
        let arrows = hops(m.method, m.sender.as_ref())
            .iter()
            .map(|h| arrow(h, payload))
            .collect();
        let subtitle = match (&m.theory, &m.sender) {
            (Some(t), Some(s)) => format!(
                "mode switches per chunk: textbook {}, measured {:.2}",
                t.mode_switches_per_chunk,
                ratio(s.mode_switches, m.chunks)
            ),
            _ => m.skipped.clone().unwrap_or_default(),
        };
        DiagramSvg {
            method: m.method.name(),
            title: format!("{}: the copy path", m.method.name()),
            subtitle,
            boxes,
            arrows,
        }
    }
}

/// One row of the timeline: the thread's mode over one chunk.
pub struct Wave {
    pub label: String,
    /// The SVG path: high in user mode, low in the kernel.
    pub d: String,
    pub note: String,
    pub y: u32,
}

#[derive(Template)]
#[template(path = "timeline.svg", escape = "html")]
pub struct TimelineSvg {
    pub method: &'static str,
    pub waves: Vec<Wave>,
}

/// A line across `x0..x1` at `top` with `dips` trips down to `top + 24`.
fn wave_path(dips: u32, top: u32) -> String {
    let (x0, x1, low) = (150.0, 590.0, f64::from(top + 24));
    let top = f64::from(top);
    let mut d = format!("M {x0} {top}");
    if dips == 0 {
        d.push_str(&format!(" L {x1} {top}"));
        return d;
    }
    let seg = (x1 - x0) / f64::from(dips);
    for i in 0..dips {
        let a = x0 + seg * f64::from(i) + seg * 0.25;
        let b = x0 + seg * f64::from(i) + seg * 0.75;
        d.push_str(&format!(
            " L {a:.1} {top} L {a:.1} {low} L {b:.1} {low} L {b:.1} {top}"
        ));
    }
    d.push_str(&format!(" L {x1} {top}"));
    d
}

impl TimelineSvg {
    pub fn of(m: &MethodDoc) -> Self {
        let mut waves = Vec::new();
        if let Some(t) = &m.theory {
            let dips = t.mode_switches_per_chunk / 2;
            waves.push(Wave {
                label: "textbook".into(),
                d: wave_path(dips, 22),
                note: format!(
                    "{} switches per chunk{}",
                    t.mode_switches_per_chunk,
                    if dips == 0 {
                        ": no syscall per chunk"
                    } else {
                        ""
                    }
                ),
                y: 22,
            });
        }
        if let Some(s) = &m.sender {
            let per_chunk = ratio(s.mode_switches, m.chunks);
            let dips = (per_chunk / 2.0).round().min(16.0) as u32;
            let note = if per_chunk > 0.0 && dips == 0 {
                format!(
                    "{per_chunk:.2} switches per chunk: one trip into the kernel per {:.0} chunks",
                    2.0 / per_chunk
                )
            } else if m.method == Method::MmapMemcpy {
                format!("{per_chunk:.2} switches per chunk, nearly all page faults")
            } else {
                format!("{per_chunk:.2} switches per chunk")
            };
            waves.push(Wave {
                label: "measured".into(),
                d: wave_path(dips.max(u32::from(per_chunk > 0.0)), 76),
                note,
                y: 76,
            });
        }
        TimelineSvg {
            method: m.method.name(),
            waves,
        }
    }
}
