//! The sending network interface and its offload features: whether the
//! device gathers scattered pages by DMA (what makes `sendfile` free of CPU
//! copies end to end), checksums and segments in hardware, or is no device
//! at all (loopback, veth, bridges), where nothing is DMAed.
//!
//! Read with the ethtool ioctl (`SIOCETHTOOL`: `ETHTOOL_GSG`, `GTXCSUM`,
//! `GTSO`, `GDRVINFO`), which every kernel answers, with or without the
//! newer ethtool netlink family; `ethtool -k` shows the same flags.

use std::{
    ffi::CStr,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
};

use serde::{Deserialize, Serialize};

/// What kind of interface carries the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DevKind {
    /// `lo`: the bytes never leave memory.
    Loopback,
    /// A software device (veth, bridge, tun, dummy, vxlan, ...): no
    /// hardware, no DMA; the kernel hands buffers to the peer.
    Virtual,
    /// A device on a bus (PCI, virtio, ...): transmits by DMA.
    Device,
}

/// One interface's offloads. `None` where the driver does not answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetDevice {
    pub name: String,
    pub kind: DevKind,
    /// The driver ethtool names (`veth`, `bridge`, `virtio_net`, ...).
    pub driver: Option<String>,
    /// Scatter-gather: the device DMAs from many pages per packet.
    pub scatter_gather: Option<bool>,
    /// The device computes the TCP/UDP checksum.
    pub tx_checksum: Option<bool>,
    /// TCP segmentation offload: the device cuts large sends into packets.
    pub tso: Option<bool>,
}

impl NetDevice {
    /// What this interface means for sendfile's last step, in one line.
    pub fn verdict(&self) -> String {
        let driver = self.driver.as_deref().unwrap_or("unknown driver");
        match (self.kind, self.scatter_gather) {
            (DevKind::Loopback, _) => format!(
                "{}: loopback, no device and no DMA: the receiving socket gets the pages and the \
                 receiver's read() copies them",
                self.name
            ),
            (DevKind::Virtual, _) => format!(
                "{} ({driver}): a software device, no DMA: the kernel passes the buffers to the \
                 peer{}",
                self.name,
                self.flags_text()
            ),
            (DevKind::Device, Some(true)) => format!(
                "{} ({driver}): this card gathers (scatter-gather on): sendfile's pages go out by \
                 DMA with no CPU copy{}",
                self.name,
                self.flags_text()
            ),
            (DevKind::Device, Some(false)) => format!(
                "{} ({driver}): no scatter-gather: the kernel linearises each packet's data \
                 first, a CPU copy sendfile's textbook row does not have{}",
                self.name,
                self.flags_text()
            ),
            (DevKind::Device, None) => format!(
                "{} ({driver}): the driver does not say whether it gathers",
                self.name
            ),
        }
    }

    fn flags_text(&self) -> String {
        let f = |name: &str, v: Option<bool>| {
            format!(
                "{name} {}",
                match v {
                    Some(true) => "on",
                    Some(false) => "off",
                    None => "?",
                }
            )
        };
        format!(
            " ({}, {}, {})",
            f("sg", self.scatter_gather),
            f("tx-checksum", self.tx_checksum),
            f("tso", self.tso)
        )
    }
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const ETHTOOL_GTXCSUM: u32 = 0x0000_0016;
const ETHTOOL_GSG: u32 = 0x0000_0018;
const ETHTOOL_GTSO: u32 = 0x0000_001e;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ethtool_drvinfo` (196 bytes; only the driver name is read).
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// One SIOCETHTOOL call with `data` as the command buffer.
fn ethtool<T>(sock: &UdpSocket, name: &str, data: &mut T) -> bool {
    // SAFETY: ifreq is plain data; zero is a valid value for every field.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= ifr.ifr_name.len() {
        return false;
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (data as *mut T).cast();
    // SAFETY: SIOCETHTOOL reads the command from, and writes the answer
    // into, the buffer ifru_data points at, which is a live `T` sized for
    // that command.
    unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut ifr) == 0 }
}

fn flag(sock: &UdpSocket, name: &str, cmd: u32) -> Option<bool> {
    let mut v = EthtoolValue { cmd, data: 0 };
    ethtool(sock, name, &mut v).then_some(v.data != 0)
}

/// Reads one interface's kind and offloads.
pub fn read(name: &str) -> std::io::Result<NetDevice> {
    let sys = Path::new("/sys/class/net").join(name);
    if !sys.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no network interface {name}"),
        ));
    }
    let sock = UdpSocket::bind("0.0.0.0:0").or_else(|_| UdpSocket::bind("[::]:0"))?;
    // SAFETY: a zeroed drvinfo is valid; cmd set below.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let driver = ethtool(&sock, name, &mut info)
        .then(|| {
            CStr::from_bytes_until_nul(&info.driver)
                .ok()
                .map(|c| c.to_string_lossy().into_owned())
        })
        .flatten()
        .filter(|d| !d.is_empty());
    let flags = std::fs::read_to_string(sys.join("flags"))
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let kind = if flags & libc::IFF_LOOPBACK as u32 != 0 {
        DevKind::Loopback
    } else if sys.join("device").exists() {
        DevKind::Device
    } else {
        DevKind::Virtual
    };
    Ok(NetDevice {
        name: name.to_owned(),
        kind,
        driver,
        scatter_gather: flag(&sock, name, ETHTOOL_GSG),
        tx_checksum: flag(&sock, name, ETHTOOL_GTXCSUM),
        tso: flag(&sock, name, ETHTOOL_GTSO),
    })
}

/// The interface the kernel would send to `to` from: the one holding the
/// local address a connected UDP socket gets (no packet is sent).
pub fn route_to(to: SocketAddr) -> std::io::Result<String> {
    let local = match to {
        SocketAddr::V4(_) => UdpSocket::bind("0.0.0.0:0")?,
        SocketAddr::V6(_) => UdpSocket::bind("[::]:0")?,
    };
    local.connect(to)?;
    let ip = local.local_addr()?.ip();
    interface_of(ip).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no interface holds {ip}, the source address towards {to}"),
        )
    })
}

/// The interface an address is configured on.
fn interface_of(ip: IpAddr) -> Option<String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, alive until
        // freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr of the family it names.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    Some(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()))
                }
                libc::AF_INET6 => {
                    let a = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    Some(IpAddr::from(a.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if addr == Some(ip) {
            // SAFETY: ifa_name is a NUL-terminated string of the node.
            found = Some(
                unsafe { CStr::from_ptr(ifa.ifa_name) }
                    .to_string_lossy()
                    .into_owned(),
            );
            break;
        }
    }
    // SAFETY: frees the list getifaddrs allocated; nothing points into it.
    unsafe { libc::freeifaddrs(head) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_lo_and_says_no_dma() {
        let to: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(route_to(to).expect("route"), "lo");
        let lo = read("lo").expect("lo");
        assert_eq!(lo.kind, DevKind::Loopback);
        assert!(lo.verdict().contains("no DMA"), "{}", lo.verdict());
    }

    #[test]
    fn an_unknown_interface_is_an_error() {
        assert!(read("zct-nonesuch0").is_err());
    }

    #[test]
    fn verdicts_follow_scatter_gather() {
        let mut d = NetDevice {
            name: "eth0".into(),
            kind: DevKind::Device,
            driver: Some("e1000e".into()),
            scatter_gather: Some(true),
            tx_checksum: Some(true),
            tso: Some(false),
        };
        assert!(d.verdict().contains("no CPU copy"), "{}", d.verdict());
        assert!(d.verdict().contains("tso off"), "{}", d.verdict());
        d.scatter_gather = Some(false);
        assert!(d.verdict().contains("linearises"), "{}", d.verdict());
        d.kind = DevKind::Virtual;
        d.driver = Some("veth".into());
        assert!(d.verdict().contains("software device, no DMA"));
    }
}
