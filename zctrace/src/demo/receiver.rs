//! The demo's checksumming receivers: one on loopback per connection (a
//! thread of the demo), or a remote `zctrace receive` that the demo reaches
//! with `--to HOST:PORT`.
//!
//! The remote protocol, so that bytes are still checked end to end and a
//! stray client is refused: the sender opens with [`HELLO`] and the payload
//! length (u64, little-endian), then sends exactly that many bytes; the
//! receiver answers with [`VERDICT`], the bytes it counted (u64) and their
//! CRC-32 (u32). A connection that opens with anything else gets [`REFUSED`]
//! and a reason, and is closed.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    thread::{self, JoinHandle},
    time::Duration,
};

/// What a sender says first: the protocol's name and version.
pub const HELLO: &[u8; 16] = b"ZCTRACE-DEMO/1\r\n";
/// The receiver's answer after the payload.
pub const VERDICT: &[u8; 4] = b"ZCOK";
/// The receiver's answer to a connection that does not speak the protocol.
pub const REFUSED: &[u8; 4] = b"ZCNO";
/// How long either side waits for the other's next message.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What one receiver got.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// The draining thread (0 for a remote receiver: not this process).
    pub tid: u32,
    pub bytes: u64,
    pub crc: u32,
}

pub struct Receiver {
    handle: JoinHandle<io::Result<Received>>,
    /// The draining thread's id (the probes charge its copies to it); 0 for
    /// a remote receiver.
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
                let (mut conn, _) = listener.accept()?;
                let (bytes, crc) = checksum(&mut conn, None, buf_size)?;
                Ok(Received { tid, bytes, crc })
            })?;
        let tid = tid_rx
            .recv()
            .map_err(|_| io::Error::other("receiver thread died"))?;
        let client = TcpStream::connect(addr)?;
        Ok((client, Receiver { handle, tid }))
    }

    /// Connects to a `zctrace receive` at `to` and announces `len` bytes.
    /// Returns the sending end; `join` reads the receiver's verdict (on a
    /// second handle of the same connection, which keeps it open when the
    /// method closes its own).
    pub fn remote(to: SocketAddr, len: u64) -> io::Result<(TcpStream, Receiver)> {
        let mut sock = TcpStream::connect_timeout(&to, TIMEOUT)?;
        let mut hello = HELLO.to_vec();
        hello.extend_from_slice(&len.to_le_bytes());
        sock.write_all(&hello)?;
        let mut verdict = sock.try_clone()?;
        let handle = thread::Builder::new()
            .name("zctrace-verdict".into())
            .spawn(move || {
                verdict.set_read_timeout(Some(TIMEOUT))?;
                let mut head = [0u8; 4];
                verdict
                    .read_exact(&mut head)
                    .map_err(|e| io::Error::new(e.kind(), format!("{to} sent no verdict: {e}")))?;
                if &head != VERDICT {
                    let mut why = String::new();
                    let _ = verdict.take(200).read_to_string(&mut why);
                    return Err(io::Error::other(format!(
                        "{to} refused the transfer: {}",
                        why.trim()
                    )));
                }
                let mut rest = [0u8; 12];
                verdict.read_exact(&mut rest)?;
                let (b, c) = rest.split_at(8);
                Ok(Received {
                    tid: 0,
                    bytes: u64::from_le_bytes(b.try_into().map_err(io::Error::other)?),
                    crc: u32::from_le_bytes(c.try_into().map_err(io::Error::other)?),
                })
            })?;
        Ok((sock, Receiver { handle, tid: 0 }))
    }

    pub fn join(self) -> io::Result<Received> {
        self.handle
            .join()
            .map_err(|_| io::Error::other("receiver thread panicked"))?
    }
}

/// Reads to end of stream, or `limit` bytes, and returns the count and the
/// CRC-32 of what arrived.
pub fn checksum(
    conn: &mut impl Read,
    limit: Option<u64>,
    buf_size: usize,
) -> io::Result<(u64, u32)> {
    let mut buf = vec![0u8; buf_size.max(4096)];
    let mut crc = crc32fast::Hasher::new();
    let mut bytes = 0u64;
    loop {
        let want = limit.map_or(buf.len(), |l| {
            usize::try_from(l - bytes)
                .unwrap_or(usize::MAX)
                .min(buf.len())
        });
        if want == 0 {
            break;
        }
        match conn.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                crc.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((bytes, crc.finalize()))
}

/// What a remote receiver made of one connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// The announced bytes arrived (or fewer, if the sender stopped early:
    /// `bytes` says), with this CRC-32.
    Checked {
        announced: u64,
        bytes: u64,
        crc: u32,
    },
    /// It did not open with the demo's hello.
    Refused(String),
}

/// Serves one connection of `zctrace receive`: the hello, the payload, the
/// verdict.
pub fn serve(conn: &mut TcpStream, buf_size: usize) -> io::Result<Served> {
    conn.set_read_timeout(Some(TIMEOUT))?;
    let mut hello = [0u8; 24];
    let mut got = 0;
    // Read what comes, up to the hello's size, so that a client that sends
    // a few bytes of something else is answered rather than waited for.
    while got < hello.len() {
        match conn.read(&mut hello[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if hello[..got.min(HELLO.len())] != HELLO[..got.min(HELLO.len())] {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if got < hello.len() || &hello[..HELLO.len()] != HELLO {
        let why = if got == 0 {
            "it sent nothing".to_owned()
        } else {
            format!(
                "it opened with {:?}, not zctrace demo's hello",
                String::from_utf8_lossy(&hello[..got.min(16)])
            )
        };
        let _ = conn.write_all(REFUSED);
        let _ = conn.write_all(format!(" not the zctrace demo protocol: {why}\n").as_bytes());
        // Closing with unread input would reset the connection and lose
        // the answer: end our side, then read (a little) until theirs ends.
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = io::copy(&mut (&*conn).take(1 << 16), &mut io::sink());
        return Ok(Served::Refused(why));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&hello[HELLO.len()..]);
    let announced = u64::from_le_bytes(len);
    let (bytes, crc) = checksum(conn, Some(announced), buf_size)?;
    let mut verdict = VERDICT.to_vec();
    verdict.extend_from_slice(&bytes.to_le_bytes());
    verdict.extend_from_slice(&crc.to_le_bytes());
    conn.write_all(&verdict)?;
    Ok(Served::Checked {
        announced,
        bytes,
        crc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> (SocketAddr, JoinHandle<io::Result<Served>>) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = thread::spawn(move || {
            let (mut c, _) = l.accept()?;
            serve(&mut c, 4096)
        });
        (addr, h)
    }

    #[test]
    fn a_remote_transfer_is_checked_end_to_end() {
        let (addr, h) = server();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let (mut sock, rx) = Receiver::remote(addr, data.len() as u64).expect("connect");
        sock.write_all(&data).expect("send");
        drop(sock);
        let got = rx.join().expect("verdict");
        assert_eq!(got.bytes, data.len() as u64);
        assert_eq!(got.crc, crc32fast::hash(&data));
        assert_eq!(
            h.join().expect("server").expect("served"),
            Served::Checked {
                announced: 100_000,
                bytes: 100_000,
                crc: crc32fast::hash(&data)
            }
        );
    }

    #[test]
    fn a_client_speaking_something_else_is_refused() {
        let (addr, h) = server();
        let mut c = TcpStream::connect(addr).expect("connect");
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
        let mut answer = String::new();
        c.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("ZCNO"), "{answer}");
        assert!(answer.contains("not the zctrace demo protocol"), "{answer}");
        match h.join().expect("server").expect("served") {
            Served::Refused(why) => assert!(why.contains("GET /"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_short_transfer_reports_what_arrived() {
        let (addr, h) = server();
        let (mut sock, rx) = Receiver::remote(addr, 10_000).expect("connect");
        sock.write_all(&[1u8; 4000]).expect("send");
        sock.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let got = rx.join().expect("verdict");
        assert_eq!(got.bytes, 4000);
        assert!(matches!(
            h.join().expect("server").expect("served"),
            Served::Checked {
                announced: 10_000,
                bytes: 4000,
                ..
            }
        ));
    }
}
