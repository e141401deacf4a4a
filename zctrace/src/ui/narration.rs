//! Step-through: walks one method a step at a time (n / p), lighting the
//! arrow each step is about on the diagram.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Block, Paragraph, Widget, Wrap},
};
use zctrace_common::Method;

use super::diagram::{Diagram, HopKind, diagram_parts};
use crate::app::App;

pub struct Step {
    pub text: &'static str,
    pub hop: Option<HopKind>,
}

use HopKind::*;

/// The narration of each method, in the project's own words.
pub fn steps(m: Method) -> &'static [Step] {
    match m {
        Method::ReadWrite => &[
            Step {
                text: "The program calls read(). The CPU leaves user mode for the kernel: mode switch 1 of 4.",
                hop: None,
            },
            Step {
                text: "If the chunk is not in the page cache, the disk controller writes it into memory by DMA while the CPU does other work.",
                hop: Some(DiskToCache),
            },
            Step {
                text: "The kernel copies the chunk from the page cache into the program's buffer: the first CPU copy.",
                hop: Some(CacheToUser),
            },
            Step {
                text: "read() returns to user mode (switch 2). The program now holds bytes it will not even look at.",
                hop: None,
            },
            Step {
                text: "The program calls write() on the socket and enters the kernel again (switch 3).",
                hop: None,
            },
            Step {
                text: "The kernel copies the buffer into a socket buffer: the second CPU copy.",
                hop: Some(UserToSocket),
            },
            Step {
                text: "write() returns (switch 4). The network card later fetches the socket buffer by DMA.",
                hop: Some(SocketToNic),
            },
            Step {
                text: "Per chunk: two syscalls, four switches, two CPU copies and two DMA copies. On loopback the last DMA never happens: watch that arrow stay grey.",
                hop: None,
            },
        ],
        Method::MmapWrite => &[
            Step {
                text: "mmap() maps the whole file into the program's address space once. No data moves yet.",
                hop: None,
            },
            Step {
                text: "Touching a page the first time faults; the kernel maps a page-cache page (read from disk by DMA if needed).",
                hop: Some(DiskToCache),
            },
            Step {
                text: "write() from the mapping: one trip into the kernel, and the CPU copies straight from the page cache into a socket buffer.",
                hop: Some(CacheToSocket),
            },
            Step {
                text: "The network card DMAs the socket buffer out.",
                hop: Some(SocketToNic),
            },
            Step {
                text: "One CPU copy saved over read+write. The price: page faults, and SIGBUS if someone truncates the file while it is mapped.",
                hop: None,
            },
        ],
        Method::Sendfile => &[
            Step {
                text: "One call, sendfile(socket, file): one trip into the kernel, two mode switches per chunk.",
                hop: None,
            },
            Step {
                text: "The disk DMAs the file into the page cache unless it is already cached.",
                hop: Some(DiskToCache),
            },
            Step {
                text: "Since Linux 6.5 the kernel hands the socket references to the page-cache pages (MSG_SPLICE_PAGES): nothing is copied.",
                hop: Some(CacheToSocket),
            },
            Step {
                text: "A network card that gathers scattered pages DMAs them straight out of the page cache.",
                hop: Some(SocketToNic),
            },
            Step {
                text: "Two DMA copies, no CPU copy, and the bytes never enter the program's memory.",
                hop: None,
            },
        ],
        Method::Splice => &[
            Step {
                text: "splice(file -> pipe): the pipe is given references to page-cache pages (disk DMA first if needed).",
                hop: Some(DiskToCache),
            },
            Step {
                text: "splice(pipe -> socket): the same references move on to the socket. The pipe only carried them.",
                hop: Some(CacheToSocket),
            },
            Step {
                text: "The network card DMAs the pages out.",
                hop: Some(SocketToNic),
            },
            Step {
                text: "Two syscalls (four switches) per chunk and no CPU copy: the price of sendfile's flexibility is one more call.",
                hop: None,
            },
        ],
        Method::Vmsplice => &[
            Step {
                text: "vmsplice() gives a pipe references to the program's own pages. They must not change until the data has gone.",
                hop: Some(UserToSocket),
            },
            Step {
                text: "splice() moves those references on to the socket.",
                hop: Some(UserToSocket),
            },
            Step {
                text: "The network card DMAs straight from the program's memory.",
                hop: Some(SocketToNic),
            },
        ],
        Method::Tee => &[
            Step {
                text: "splice() moves references to the file's cached pages into pipe 1.",
                hop: Some(DiskToCache),
            },
            Step {
                text: "tee() duplicates pipe 1 into pipe 2 without consuming it: the same pages, referenced twice.",
                hop: Some(CacheToSocket),
            },
            Step {
                text: "Each pipe is spliced to its own socket: two receivers, still one copy of the data in memory.",
                hop: Some(CacheToSocket),
            },
            Step {
                text: "Each socket's pages are DMA'd out by the network card.",
                hop: Some(SocketToNic),
            },
        ],
        Method::ZeroCopySend => &[
            Step {
                text: "send(MSG_ZEROCOPY) pins the program's pages and attaches them to the socket buffer instead of copying.",
                hop: Some(UserToSocket),
            },
            Step {
                text: "The network card DMAs from the pinned pages.",
                hop: Some(SocketToNic),
            },
            Step {
                text: "The buffer may be reused only after the kernel says so on the socket's error queue; a COPIED flag there means it had to copy after all (always on loopback).",
                hop: None,
            },
        ],
        Method::CopyFileRange => &[
            Step {
                text: "copy_file_range() asks the kernel to copy between two files; the bytes never visit user space.",
                hop: None,
            },
            Step {
                text: "Source pages come into the page cache, by DMA if they are not cached.",
                hop: Some(DiskToCache),
            },
            Step {
                text: "Without shared extents (reflink), the CPU copies page cache to page cache.",
                hop: Some(CacheToSocket),
            },
            Step {
                text: "Writeback later DMAs the new pages to the disk.",
                hop: Some(SocketToNic),
            },
        ],
        Method::DirectIo => &[
            Step {
                text: "read() on an O_DIRECT file: the disk DMAs straight into the program's aligned buffer, skipping the page cache.",
                hop: Some(DiskToUser),
            },
            Step {
                text: "write() copies the buffer into a socket buffer: one CPU copy.",
                hop: Some(UserToSocket),
            },
            Step {
                text: "The network card DMAs it out.",
                hop: Some(SocketToNic),
            },
            Step {
                text: "Databases do this because they cache data themselves; every read goes to the device.",
                hop: None,
            },
        ],
        Method::UringReadSend => &[
            Step {
                text: "The program writes requests into the ring's submission queue in its own memory: a read of the file into a buffer, linked to a send of that buffer, for a whole batch of chunks. No syscall yet.",
                hop: None,
            },
            Step {
                text: "One io_uring_enter() hands the batch to the kernel: two mode switches for many chunks.",
                hop: None,
            },
            Step {
                text: "Each read copies its chunk from the page cache into the program's buffer, as read() would: a CPU copy (after disk DMA if the file was not cached).",
                hop: Some(CacheToUser),
            },
            Step {
                text: "Each send copies the buffer into a socket buffer, as write() would: the second CPU copy.",
                hop: Some(UserToSocket),
            },
            Step {
                text: "The results land in the completion queue, also in the program's memory; the network card fetches the data by DMA.",
                hop: Some(SocketToNic),
            },
            Step {
                text: "The lesson: a ring removes syscalls and mode switches, not copies. Compare read-write: the same two CPU copies, far fewer switches.",
                hop: None,
            },
        ],
        Method::UringSplice => &[
            Step {
                text: "The program queues splice requests: file to pipe, then pipe to socket, for a batch of chunks, and enters the kernel once.",
                hop: None,
            },
            Step {
                text: "The file's pages go into the pipe and on into the socket by reference, as splice() does: no CPU copy.",
                hop: Some(CacheToSocket),
            },
            Step {
                text: "The network card DMAs the pages out. No copies by the CPU and almost no mode switches: the best of splice and of the ring.",
                hop: Some(SocketToNic),
            },
        ],
        Method::UringSendZc => &[
            Step {
                text: "The program queues zero-copy sends of its own memory and enters the kernel once per batch.",
                hop: None,
            },
            Step {
                text: "The kernel pins the user pages and attaches them to socket buffers by reference: no CPU copy on the way out.",
                hop: Some(UserToSocket),
            },
            Step {
                text: "Each send completes twice: once when queued, once (a notification) when the kernel no longer needs the pages and the program may reuse them.",
                hop: None,
            },
            Step {
                text: "On loopback the receiving socket gets those very pages and the kernel copies them on delivery; the notification says so when usage reports are asked for.",
                hop: Some(SocketToNic),
            },
        ],
        Method::MmapMemcpy => &[
            Step {
                text: "The program maps the source file for reading and the copy, made the right size with ftruncate(), for writing: a few syscalls, once.",
                hop: None,
            },
            Step {
                text: "Reading a source page the first time faults into the kernel (2 mode switches); the kernel maps a page-cache page, read from disk by DMA if needed.",
                hop: Some(DiskToCache),
            },
            Step {
                text: "memcpy() copies the bytes from one mapping to the other in user mode: a real CPU copy, and no probe in the kernel can see it. zctrace infers its size from the copy it checks.",
                hop: Some(UserCopy),
            },
            Step {
                text: "Writing a copy page the first time faults too: the kernel gives it a page-cache page and marks it dirty.",
                hop: None,
            },
            Step {
                text: "msync() writes the dirty pages back: the disk controller reads them by DMA. Without it the kernel's flusher threads do it later, for nobody in particular.",
                hop: Some(SocketToNic),
            },
            Step {
                text: "Per chunk: no syscall at all, one CPU copy the kernel never sees, and a page fault per page of each mapping. Fewer switches than read+write, the same copy count as mmap+write.",
                hop: None,
            },
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
        | Method::Fallback => &[],
    }
}

pub struct NarrationView<'a>(pub &'a App);

impl Widget for NarrationView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.0;
        let Some(p) = diagram_parts(app, app.selected) else {
            return;
        };
        let (method, hops, switches, note, reversed) =
            (p.method, p.hops, p.switches, p.note, p.reversed);
        let all = steps(method);
        let cur = if all.is_empty() {
            0
        } else {
            app.step % all.len()
        };
        let text_h = (all.len() as u16 + 2).clamp(4, area.height / 2);
        let [top, bottom] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(text_h)]).areas(area);
        let focus = all.get(cur).and_then(|st| st.hop);
        Diagram {
            method,
            hops: &hops,
            focus,
            switches,
            note: note.as_deref(),
            reversed,
        }
        .render(top, buf);
        // Small terminals: the previous, current and next step only, so the
        // current one is always on screen.
        let window = if text_h < all.len() as u16 + 2 {
            cur.saturating_sub(1)..(cur + 2).min(all.len())
        } else {
            0..all.len()
        };
        let lines: Vec<Line> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| window.contains(i))
            .map(|(i, st)| {
                let text = format!("{}. {}", i + 1, st.text);
                if i == cur {
                    Line::from(Span::styled(text, Style::new().bold().reversed()))
                } else {
                    Line::from(Span::styled(text, Style::new().dim()))
                }
            })
            .collect();
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(format!(
                " step {}/{} of {} (n next, p back, j/k method) ",
                cur + 1,
                all.len(),
                method.name()
            )))
            .render(bottom, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        app::{View, tests::app_with_read_write},
        demo::methods::DEMO_METHODS,
        ui::tests::render,
    };

    #[test]
    fn every_demo_method_is_narrated() {
        for m in DEMO_METHODS {
            assert!(steps(m).len() >= 3, "{m:?}");
        }
    }

    #[test]
    fn steps_advance_and_wrap() {
        let mut a = app_with_read_write();
        a.view = View::Narration;
        let text = render(&a, 100, 40);
        assert!(text.contains("step 1/8 of read-write"), "{text}");
        a.step = 2;
        let text = render(&a, 100, 40);
        assert!(text.contains("step 3/8"), "{text}");
        a.step = 8;
        assert!(render(&a, 100, 40).contains("step 1/8"), "wraps");
    }
}
