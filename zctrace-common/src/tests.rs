extern crate std;

use super::*;

fn info(call: Call, in_kind: FdKind, out_kind: FdKind) -> CallInfo {
    CallInfo {
        in_kind,
        out_kind,
        ..CallInfo::new(call)
    }
}

/// Runs a syscall sequence through `classify` (every call moving payload),
/// returning each call's method and flow.
fn run_flows(seq: &[CallInfo]) -> std::vec::Vec<(Method, Flow)> {
    let (mut current, mut src) = (Method::Other, FdKind::Memory);
    seq.iter()
        .map(|i| {
            let c = classify(i, current, src);
            current = c.next;
            src = c.next_src;
            (c.method, c.flow)
        })
        .collect()
}

/// `run_flows`, methods only.
fn run(seq: &[CallInfo]) -> std::vec::Vec<Method> {
    run_flows(seq).into_iter().map(|(m, _)| m).collect()
}

fn flow(src: FdKind, dst: FdKind) -> Flow {
    Flow::new(src, dst)
}

#[test]
fn read_then_write_is_read_write() {
    let seq = [
        info(Call::Read, FdKind::File, FdKind::Unknown),
        info(Call::Write, FdKind::Unknown, FdKind::Socket),
        info(Call::Read, FdKind::File, FdKind::Unknown),
        info(Call::Sendto, FdKind::Unknown, FdKind::Socket),
    ];
    assert_eq!(run(&seq), [Method::ReadWrite; 4]);
    let flows: std::vec::Vec<Flow> = run_flows(&seq).into_iter().map(|(_, f)| f).collect();
    use FdKind::*;
    assert_eq!(
        flows,
        [
            flow(File, Memory),
            flow(File, Socket),
            flow(File, Memory),
            flow(File, Socket)
        ]
    );
}

#[test]
fn write_without_a_read_before_it_comes_from_memory() {
    use FdKind::*;
    let seq = [info(Call::Write, Unknown, Tcp)];
    assert_eq!(run_flows(&seq), [(Method::SocketSend, flow(Memory, Tcp))]);
    // A program writing what it made itself to a file or a pipe moves
    // payload too: never `other`.
    let seq = [
        info(Call::Write, Unknown, Pipe),
        info(Call::Write, Unknown, File),
    ];
    assert_eq!(
        run_flows(&seq),
        [
            (Method::ReadWrite, flow(Memory, Pipe)),
            (Method::ReadWrite, flow(Memory, File))
        ]
    );
}

#[test]
fn flows_follow_the_last_read() {
    use FdKind::*;
    // curl -o file: a config file read, then the download.
    let curl = [
        info(Call::Read, File, Unknown),
        info(Call::Recvfrom, Tcp, Unknown),
        info(Call::Write, Unknown, File),
        info(Call::Read, Tcp, Unknown),
        info(Call::Write, Unknown, File),
    ];
    assert_eq!(
        run_flows(&curl),
        [
            (Method::ReadWrite, flow(File, Memory)),
            (Method::SocketRecv, flow(Tcp, Memory)),
            (Method::ReadWrite, flow(Tcp, File)),
            (Method::SocketRecv, flow(Tcp, Memory)),
            (Method::ReadWrite, flow(Tcp, File)),
        ]
    );
    // tar c | cat > /dev/null: a producer and a sink.
    let tar = [
        info(Call::Read, File, Unknown),
        info(Call::Write, Unknown, Pipe),
    ];
    assert_eq!(run_flows(&tar)[1], (Method::ReadWrite, flow(File, Pipe)));
    let cat = [
        info(Call::Read, Pipe, Unknown),
        info(Call::Write, Unknown, CharDev),
    ];
    assert_eq!(
        run_flows(&cat),
        [
            (Method::ReadWrite, flow(Pipe, Memory)),
            (Method::ReadWrite, flow(Pipe, CharDev))
        ]
    );
    // An rsync receiver: from its sender over a Unix socket, into a file.
    let rsync = [
        info(Call::Read, Unix, Unknown),
        info(Call::Write, Unknown, File),
    ];
    assert_eq!(run_flows(&rsync)[1], (Method::ReadWrite, flow(Unix, File)));
}

#[test]
fn socket_kinds() {
    assert_eq!(FdKind::of_socket(1, 0), FdKind::Unix);
    assert_eq!(FdKind::of_socket(2, 6), FdKind::Tcp);
    assert_eq!(FdKind::of_socket(10, 6), FdKind::Tcp);
    assert_eq!(FdKind::of_socket(10, 17), FdKind::Udp);
    assert_eq!(FdKind::of_socket(16, 0), FdKind::Socket); // netlink
    for k in [FdKind::Tcp, FdKind::Udp, FdKind::Unix, FdKind::Socket] {
        assert!(k.is_socket());
        assert_eq!(FdKind::from_u32(k as u32), k);
    }
    assert!(!FdKind::Pipe.is_socket() && !FdKind::Memory.is_socket());
}

#[test]
fn only_writes_from_a_file_mapping_are_mmap_write() {
    let mut mmap = CallInfo::new(Call::Mmap);
    mmap.maps_file = true;
    let mut from_map = info(Call::Write, FdKind::Unknown, FdKind::Socket);
    from_map.from_mapping = true;
    let seq = [
        CallInfo::new(Call::Mmap), // anonymous: thread stacks, allocator
        mmap,
        info(Call::Write, FdKind::Unknown, FdKind::Socket), // from the heap
        from_map,
        CallInfo::new(Call::Munmap),
    ];
    assert_eq!(
        run(&seq),
        [
            Method::Other,
            Method::Other,
            Method::SocketSend,
            Method::MmapWrite,
            Method::Other
        ]
    );
}

#[test]
fn mapping_ranges() {
    let st = ThreadState {
        map_start: 0x1000,
        map_len: 0x2000,
        ..ThreadState::NEW
    };
    assert!(st.in_mapping(0x1000) && st.in_mapping(0x2fff));
    assert!(!st.in_mapping(0xfff) && !st.in_mapping(0x3000));
    assert!(!ThreadState::NEW.in_mapping(0));
}

#[test]
fn a_socket_receive_becomes_the_source_of_the_next_write() {
    let seq = [
        info(Call::Read, FdKind::File, FdKind::Unknown),
        info(Call::Recvfrom, FdKind::Socket, FdKind::Unknown),
        info(Call::Write, FdKind::Unknown, FdKind::Socket),
    ];
    assert_eq!(
        run_flows(&seq),
        [
            (Method::ReadWrite, flow(FdKind::File, FdKind::Memory)),
            (Method::SocketRecv, flow(FdKind::Socket, FdKind::Memory)),
            (Method::ReadWrite, flow(FdKind::Socket, FdKind::Socket))
        ]
    );
}

#[test]
fn zero_copy_pipes() {
    let splice_file = info(Call::Splice, FdKind::File, FdKind::Pipe);
    let splice_pipe = info(Call::Splice, FdKind::Pipe, FdKind::Socket);
    assert_eq!(
        run(&[splice_file, splice_pipe]),
        [Method::Splice, Method::Splice]
    );

    let vms = info(Call::Vmsplice, FdKind::Unknown, FdKind::Pipe);
    assert_eq!(
        run(&[vms, splice_pipe]),
        [Method::Vmsplice, Method::Vmsplice]
    );

    let tee = info(Call::Tee, FdKind::Pipe, FdKind::Pipe);
    assert_eq!(
        run(&[splice_file, tee, splice_pipe, splice_pipe, splice_file]),
        [
            Method::Splice,
            Method::Tee,
            Method::Tee,
            Method::Tee,
            Method::Tee
        ]
    );
}

#[test]
fn o_direct_and_zerocopy() {
    let mut direct = info(Call::Read, FdKind::File, FdKind::Unknown);
    direct.direct = true;
    assert_eq!(
        run(&[direct, info(Call::Write, FdKind::Unknown, FdKind::Socket)]),
        [Method::DirectIo, Method::DirectIo]
    );

    let mut zc = info(Call::Sendto, FdKind::Unknown, FdKind::Socket);
    zc.zerocopy = true;
    let mut errq = info(Call::Recvmsg, FdKind::Socket, FdKind::Unknown);
    errq.errqueue = true;
    assert_eq!(
        run(&[zc, errq]),
        [Method::ZeroCopySend, Method::ZeroCopySend]
    );
    assert_eq!(derived_counter(&zc), Some(counter::PAGEREF_DERIVED));
    assert_eq!(derived_counter(&errq), None);
}

#[test]
fn derived_counters_follow_the_data_path() {
    let d = |c, i, o| derived_counter(&info(c, i, o));
    assert_eq!(
        d(Call::Read, FdKind::File, FdKind::Unknown),
        Some(counter::K2U_DERIVED)
    );
    assert_eq!(d(Call::Read, FdKind::CharDev, FdKind::Unknown), None);
    assert_eq!(
        d(Call::Write, FdKind::Unknown, FdKind::Socket),
        Some(counter::U2K_DERIVED)
    );
    assert_eq!(
        d(Call::Sendfile, FdKind::File, FdKind::Socket),
        Some(counter::PAGEREF_DERIVED)
    );
    assert_eq!(
        d(Call::Sendfile, FdKind::File, FdKind::File),
        Some(counter::K2K_DERIVED)
    );
    assert_eq!(
        d(Call::Splice, FdKind::Pipe, FdKind::File),
        Some(counter::K2K_DERIVED)
    );
    assert_eq!(
        d(Call::CopyFileRange, FdKind::File, FdKind::File),
        Some(counter::K2K_DERIVED)
    );
    assert_eq!(d(Call::Mmap, FdKind::Unknown, FdKind::Unknown), None);
}

#[test]
fn send_class_from_iterator() {
    // 6.18 numbering: ITER_UBUF = 0, ITER_IOVEC = 1, ITER_BVEC = 2.
    let mask = 0b11;
    assert_eq!(SendClass::classify(0, 0, mask), SendClass::UserCopy);
    assert_eq!(
        SendClass::classify(1, MSG_ZEROCOPY, mask),
        SendClass::ZeroCopyPinned
    );
    assert_eq!(
        SendClass::classify(2, MSG_SPLICE_PAGES, mask),
        SendClass::PageRefs
    );
    assert_eq!(SendClass::classify(2, 0, mask), SendClass::KernelCopy);
    assert_eq!(SendClass::classify(200, 0, mask), SendClass::KernelCopy);
}

#[test]
fn enums_round_trip_and_reject_garbage() {
    for m in Method::ALL {
        assert_eq!(Method::from_u32(m as u32), Some(m));
    }
    for c in Call::ALL {
        assert_eq!(Call::from_u32(c as u32), Some(c));
    }
    assert_eq!(Method::from_u32(Method::COUNT as u32), None);
    assert_eq!(Call::from_u32(u32::MAX), None);
    assert_eq!(FdKind::from_mode(0o100_644), FdKind::File);
    assert_eq!(FdKind::from_mode(0o010_600), FdKind::Pipe);
    assert_eq!(FdKind::from_mode(0o140_777), FdKind::Socket);
}

#[test]
fn thread_state_flags_round_trip() {
    let mut i = info(Call::Sendmsg, FdKind::Pipe, FdKind::Socket);
    i.zerocopy = true;
    i.maps_file = true;
    i.from_mapping = true;
    let st = ThreadState {
        call: i.call as u32,
        in_kind: i.in_kind as u32,
        out_kind: i.out_kind as u32,
        flags: ThreadState::pack_flags(&i),
        ..ThreadState::NEW
    };
    assert_eq!(st.info(), i);
}

#[test]
fn shared_types_have_no_padding() {
    use core::mem::size_of;
    assert_eq!(size_of::<CounterKey>(), 20);
    assert_eq!(size_of::<Counters>(), 8 * counter::COUNT);
    assert_eq!(size_of::<ThreadState>(), 384);
    assert_eq!(size_of::<EnterMemo>(), 32);
    assert_eq!(core::mem::offset_of!(ThreadState, memo), 192);
    assert_eq!(core::mem::offset_of!(ThreadState, fd_cache_fd), 64);
    assert_eq!(core::mem::offset_of!(ThreadState, enter_ns), 128);
}

#[test]
fn only_byte_counting_calls_count_bytes() {
    assert!(Call::Read.returns_bytes() && Call::Sendfile.returns_bytes());
    assert!(!Call::Mmap.returns_bytes() && !Call::IoUringEnter.returns_bytes());
    assert!(!Call::Other.returns_bytes());
}

#[test]
fn events_parse_from_bytes_and_reject_short_input() {
    let mut b = [0u8; 64];
    b[24..28].copy_from_slice(&42u32.to_le_bytes());
    b[48..51].copy_from_slice(b"cat");
    let e = Event::from_bytes(&b).expect("64 bytes");
    assert_eq!(e.tgid, u32::from_le_bytes([b[24], b[25], b[26], b[27]]));
    assert_eq!(e.comm_str(), "cat");
    assert!(Event::from_bytes(&b[..63]).is_none());
}

#[test]
fn a_read_from_a_device_starts_its_own_flow() {
    use FdKind::*;
    // dd after the loader read a file: /dev/zero -> /dev/null is data from
    // the device, not from the file read before.
    let seq = [
        info(Call::Read, File, Unknown),
        info(Call::Read, CharDev, Unknown),
        info(Call::Write, Unknown, CharDev),
        info(Call::Write, Unknown, Socket),
    ];
    assert_eq!(
        run_flows(&seq),
        [
            (Method::ReadWrite, flow(File, Memory)),
            (Method::ReadWrite, flow(CharDev, Memory)),
            (Method::ReadWrite, flow(CharDev, CharDev)),
            (Method::ReadWrite, flow(CharDev, Socket)),
        ]
    );
}

#[test]
fn row_cache_finds_recent_rows_and_replaces_the_oldest() {
    let mut st = ThreadState::NEW;
    let f = 1 | 3 << 8; // file -> socket
    assert_eq!(st.cached_row(1, 1, f), None);
    for (i, call) in (1..=ROW_CACHE as u32).enumerate() {
        st.remember_row(3, call, f, 100 + i as u32);
    }
    for (i, call) in (1..=ROW_CACHE as u32).enumerate() {
        assert_eq!(st.cached_row(3, call, f), Some(100 + i as u32));
    }
    // Same call, other method or other flow: another row.
    assert_eq!(st.cached_row(4, 1, f), None);
    assert_eq!(st.cached_row(3, 1, 7 | 1 << 8), None);
    // One more replaces the oldest (call 1) and nothing else.
    st.remember_row(4, 1, f, 200);
    assert_eq!(st.cached_row(3, 1, f), None);
    assert_eq!(st.cached_row(4, 1, f), Some(200));
    assert_eq!(st.cached_row(3, 2, f), Some(101));
    st.forget_rows();
    assert_eq!(st.cached_row(4, 1, f), None);
    assert_eq!(st.cached_row(3, 2, f), None);
}

#[test]
fn thread_slots_are_in_range_and_spread_neighbouring_stacks() {
    // Stacks 16 KiB and 32 KiB apart (vmalloc'd stacks with guard pages),
    // as the kernel hands them to the threads of one process.
    for stride in [16u64 << 10, 32 << 10] {
        let base = 0xffff_c900_0000_0000u64 + 0x3f58;
        let mut seen = [false; THREAD_SLOTS as usize];
        let mut collisions = 0;
        for i in 0..1024 {
            let slot = thread_slot(base + i * stride);
            assert!(slot < THREAD_SLOTS);
            collisions += usize::from(seen[slot as usize]);
            seen[slot as usize] = true;
        }
        assert!(
            collisions < 40,
            "{collisions} of 1024 collide at stride {stride}"
        );
    }
}

#[test]
fn the_enter_memo_replays_only_what_it_was_keyed_on() {
    let rw = Method::ReadWrite as u32;
    let mut st = ThreadState::NEW;
    st.current = rw;
    st.src = FdKind::File as u8;
    let read = EnterMemo {
        nr: 1, // read (0) + 1
        fd: 3,
        epoch: 7,
        methods: EnterMemo::methods(rw, Call::Read as u32, rw, rw),
        row: 5,
        kinds: (FdKind::File as u32) << 16 | (FdKind::File as u32) << 24,
        ..EnterMemo::EMPTY
    };
    assert_eq!(read.current(), rw);
    assert_eq!(read.call(), Call::Read as u32);
    assert_eq!((read.method(), read.next()), (rw, rw));
    assert_eq!(st.memo_find(0, 3, 7), None, "empty memo");
    st.memo_store(read);
    assert_eq!(st.memo_find(0, 3, 7), Some(&read));
    // Another fd, another epoch (an fd was closed or duped), another
    // syscall, or another method before the call: no replay.
    assert_eq!(st.memo_find(0, 4, 7), None);
    assert_eq!(st.memo_find(0, 3, 8), None);
    assert_eq!(st.memo_find(1, 3, 7), None);
    st.current = Method::Other as u32;
    assert_eq!(st.memo_find(0, 3, 7), None);
    st.current = rw;
    // Or the data in hand from another source (a write's row names it).
    st.src = FdKind::Tcp as u8;
    assert_eq!(st.memo_find(0, 3, 7), None);
    st.src = FdKind::File as u8;
    // A write joins the read (a read/write loop keeps both)...
    let write = EnterMemo {
        nr: 2,
        fd: 4,
        methods: EnterMemo::methods(rw, Call::Write as u32, rw, rw),
        row: 6,
        ..read
    };
    st.memo_store(write);
    assert_eq!(st.memo_find(0, 3, 7), Some(&read));
    assert_eq!(st.memo_find(1, 4, 7), Some(&write));
    // ...a new epoch for the read replaces the read, not the write...
    let read8 = EnterMemo { epoch: 8, ..read };
    st.memo_store(read8);
    assert_eq!(st.memo_find(0, 3, 8), Some(&read8));
    assert_eq!(st.memo_find(1, 4, 7), Some(&write));
    // ...and recycled rows forget every entry (they name rows).
    st.forget_rows();
    assert_eq!(st.memo_find(0, 3, 8), None);
    assert_eq!(st.memo_find(1, 4, 7), None);
}

#[test]
fn io_uring_opcodes_name_their_methods_and_counters() {
    use crate::method::uring_op::*;
    assert_eq!(uring_method(READ), Method::UringRead);
    assert_eq!(uring_method(READ_FIXED), Method::UringRead);
    assert_eq!(uring_method(WRITEV), Method::UringWrite);
    assert_eq!(uring_method(SEND), Method::UringSend);
    assert_eq!(uring_method(RECVMSG), Method::UringRecv);
    assert_eq!(uring_method(SEND_ZC), Method::UringSendZc);
    assert_eq!(uring_method(TEE), Method::UringSplice);
    assert_eq!(uring_method(0), Method::UringOther, "NOP");
    assert_eq!(uring_method(18), Method::UringOther, "OPENAT");
    let c = |op, kind, direct| uring_counter(op, kind, direct);
    assert_eq!(c(READ, FdKind::File, false), Some(counter::K2U_DERIVED));
    assert_eq!(c(READ, FdKind::File, true), Some(counter::DIRECT_IO_BYTES));
    assert_eq!(c(WRITE, FdKind::File, false), Some(counter::U2K_DERIVED));
    assert_eq!(c(RECV, FdKind::Socket, false), Some(counter::K2U_DERIVED));
    assert_eq!(c(SEND, FdKind::Socket, false), Some(counter::U2K_DERIVED));
    assert_eq!(
        c(SEND_ZC, FdKind::Socket, false),
        Some(counter::PAGEREF_DERIVED)
    );
    assert_eq!(
        c(SPLICE, FdKind::Pipe, false),
        Some(counter::PAGEREF_DERIVED)
    );
    assert_eq!(c(SPLICE, FdKind::File, false), Some(counter::K2K_DERIVED));
    assert_eq!(c(TEE, FdKind::Pipe, false), Some(counter::PAGEREF_DERIVED));
    assert_eq!(c(0, FdKind::Unknown, false), None);
    for m in Method::ALL {
        assert_eq!(
            Method::from_u32(m as u32),
            Some(m),
            "{m:?} in ALL at its value"
        );
    }
}

#[test]
fn a_memo_entry_stands_only_for_calls_that_pass_its_own_checks() {
    let entry = |call: Call, flags: u32| EnterMemo {
        nr: 1,
        fd: 3,
        epoch: 1,
        methods: 0,
        flags: flags | memo_checks(call).expect("replayable"),
        derived: NO_COUNTER,
        row: 7,
        kinds: 0,
    };
    let mut st = ThreadState::NEW;
    // A read checks nothing beyond the key.
    assert!(st.memo_applies(&entry(Call::Read, 0), &[3, 0x1000, 4096, 0, 0, 0]));
    // sendto: the flags are the fourth argument; a zerocopy send is not a
    // copying one.
    let copying = entry(Call::Sendto, 0);
    assert!(st.memo_applies(&copying, &[3, 0x1000, 4096, 0, 0, 0]));
    assert!(
        st.memo_applies(&copying, &[3, 0x1000, 4096, 0x40, 0, 0]),
        "MSG_DONTWAIT changes nothing"
    );
    assert!(!st.memo_applies(&copying, &[3, 0x1000, 4096, MSG_ZEROCOPY as u64, 0, 0]));
    let zerocopy = entry(Call::Sendmsg, 2);
    assert!(st.memo_applies(&zerocopy, &[3, 0x1000, MSG_ZEROCOPY as u64, 0, 0, 0]));
    assert!(!st.memo_applies(&zerocopy, &[3, 0x1000, 0, 0, 0, 0]));
    let errqueue = entry(Call::Recvmsg, 4);
    assert!(st.memo_applies(&errqueue, &[3, 0x1000, MSG_ERRQUEUE as u64, 0, 0, 0]));
    assert!(!st.memo_applies(&errqueue, &[3, 0x1000, 0, 0, 0, 0]));
    // With a file mapping: a write from it is not replayed, one from
    // elsewhere is; a writev or sendmsg is not replayed at all.
    st.map_start = 0x10_0000;
    st.map_len = 0x1_0000;
    let write = entry(Call::Write, 0);
    assert!(!st.memo_applies(&write, &[3, 0x10_0800, 4096, 0, 0, 0]));
    assert!(st.memo_applies(&write, &[3, 0x1000, 4096, 0, 0, 0]));
    assert!(!st.memo_applies(&entry(Call::Writev, 0), &[3, 0x1000, 1, 0, 0, 0]));
    assert!(!st.memo_applies(&entry(Call::Sendmsg, 0), &[3, 0x1000, 0, 0, 0, 0]));
    // Calls whose classification depends on more than one fd or on user
    // memory are never remembered.
    for call in [
        Call::Sendfile,
        Call::Splice,
        Call::Mmap,
        Call::IoUringEnter,
        Call::Other,
    ] {
        assert_eq!(memo_checks(call), None, "{call:?}");
    }
}
