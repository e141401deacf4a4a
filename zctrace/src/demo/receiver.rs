//! The loopback receiver: drains one connection and checks what arrived.

use std::{
    io::{self, Read},
    net::{Ipv4Addr, TcpListener, TcpStream},
    thread::{self, JoinHandle},
};

/// What one receiver got.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub tid: u32,
    pub bytes: u64,
    pub crc: u32,
}

pub struct Receiver {
    handle: JoinHandle<io::Result<Received>>,
    /// The draining thread's id (the probes charge its copies to it).
    pub tid: u32,
}

impl Receiver {
    /// Listens on 127.0.0.1 (ephemeral port, never another address),
    /// connects to it, and drains the accepted side on its own thread.
    /// Returns the sending end.
    pub fn spawn(buf_size: usize) -> io::Result<(TcpStream, Receiver)> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let (tid_tx, tid_rx) = std::sync::mpsc::sync_channel(1);
        let handle = thread::Builder::new()
            .name("zctrace-recv".into())
            .spawn(move || {
                let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
                let _ = tid_tx.send(tid);
                drain(&listener, tid, buf_size)
            })?;
        let tid = tid_rx
            .recv()
            .map_err(|_| io::Error::other("receiver thread died"))?;
        let client = TcpStream::connect(addr)?;
        Ok((client, Receiver { handle, tid }))
    }

    pub fn join(self) -> io::Result<Received> {
        self.handle
            .join()
            .map_err(|_| io::Error::other("receiver thread panicked"))?
    }
}

fn drain(listener: &TcpListener, tid: u32, buf_size: usize) -> io::Result<Received> {
    let (mut conn, _) = listener.accept()?;
    let mut buf = vec![0u8; buf_size.max(4096)];
    let mut crc = crc32fast::Hasher::new();
    let mut bytes = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                crc.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Received {
        tid,
        bytes,
        crc: crc.finalize(),
    })
}
