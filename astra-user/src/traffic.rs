//! Built-in traffic generators for the lab and the tests: benign request/response sessions,
//! scans, login-attempt bursts and raw SYN floods (optionally from spoofed sources). They need
//! no outside tool, and every one of them is bounded in count and time.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;

use crate::{
    error::{Error, Result},
    netns::Netns,
};

/// A TCP service in `ns` on `port`: each connection gets `greeting`, then one `reply` for
/// every read, until the peer closes or `reads` reads were answered. Runs until `stop`.
pub fn serve_tcp(
    ns: &Netns,
    port: u16,
    greeting: &'static [u8],
    reply: &'static [u8],
    reads: usize,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let l = ns.run(move || TcpListener::bind(("0.0.0.0", port)))?;
    let l = l.map_err(|e| Error::io(format!("listening on port {port}"), e))?;
    l.set_nonblocking(true)
        .map_err(|e| Error::io("listener", e))?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    std::thread::spawn(move || {
                        if !greeting.is_empty() && s.write_all(greeting).is_err() {
                            return;
                        }
                        let mut buf = [0u8; 2048];
                        for _ in 0..reads {
                            match s.read(&mut buf) {
                                Ok(n) if n > 0 => {
                                    if s.write_all(reply).is_err() {
                                        return;
                                    }
                                }
                                _ => return,
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok(())
}

/// Web-like sessions from `ns` to `to` every `gap` until `dur` passes or `stop` is set:
/// connect, send a request, read the answer, close. Returns the completed sessions.
pub fn web_sessions(
    ns: &Netns,
    to: SocketAddr,
    gap: Duration,
    dur: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let path = ns.path();
    std::thread::spawn(move || {
        crate::netns::in_ns(&path, move || {
            let end = Instant::now() + dur;
            let mut ok = 0;
            while Instant::now() < end && !stop.load(Ordering::SeqCst) {
                if let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(300)) {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 4096];
                    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                        && s.read(&mut buf).is_ok_and(|n| n > 0)
                    {
                        ok += 1;
                    }
                }
                std::thread::sleep(gap);
            }
            ok
        })
        .unwrap_or(0)
    })
}

/// A TCP connect scan of `ports` on `target` from `ns`; returns the open ports.
pub fn connect_scan(ns: &Netns, target: IpAddr, ports: Vec<u16>) -> Result<Vec<u16>> {
    ns.run(move || {
        ports
            .into_iter()
            .filter(|p| {
                TcpStream::connect_timeout(&SocketAddr::new(target, *p), Duration::from_millis(50))
                    .is_ok()
            })
            .collect()
    })
}

/// `n` short login-like sessions to `to`: connect, read the greeting, send a guess, read the
/// rejection, close. Returns the sessions that completed.
pub fn login_attempts(ns: &Netns, to: SocketAddr, n: usize) -> Result<usize> {
    ns.run(move || {
        let mut done = 0;
        for i in 0..n {
            let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(500)) else {
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 2048];
            if s.read(&mut buf).is_ok()
                && s.write_all(format!("user root password guess{i}\r\n").as_bytes())
                    .is_ok()
                && s.read(&mut buf).is_ok()
            {
                done += 1;
            }
        }
        done
    })
}

/// Sends `count` UDP datagrams of `size` bytes from `ns` to `to`, spread over 1000 ports.
pub fn udp_flood(
    ns: &Netns,
    src: Ipv4Addr,
    to: Ipv4Addr,
    count: usize,
    size: usize,
) -> Result<usize> {
    ns.run(move || {
        let Ok(sock) = std::net::UdpSocket::bind((src, 0)) else {
            return 0;
        };
        let payload = vec![0u8; size];
        (0..count)
            .filter(|i| {
                sock.send_to(&payload, (to, 10_000 + (i % 1000) as u16))
                    .is_ok()
            })
            .count()
    })
}

/// Where a raw SYN flood claims to come from.
#[derive(Clone, Copy, Debug)]
pub enum SynSource {
    /// The sender's real address: the flood can be traced and blocked.
    Real(Ipv4Addr),
    /// A different random address in 198.19.0.0/16 for every packet.
    SpoofedRandom,
}

/// Sends `count` TCP SYNs to `to:port` from `ns` through a raw socket, with random source
/// ports (and random source addresses when spoofed). Returns the packets sent.
pub fn syn_flood(
    ns: &Netns,
    source: SynSource,
    to: Ipv4Addr,
    port: u16,
    count: usize,
) -> Result<usize> {
    ns.run(move || -> Result<usize> {
        // SAFETY: plain socket creation; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(Error::io(
                "raw socket (needs CAP_NET_RAW)",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd was just created and is owned by this guard alone.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(port) ^ count as u64;
        let mut next = || {
            // xorshift: cheap, deterministic and good enough for ports and addresses.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut sent = 0;
        let mut buf = Vec::with_capacity(64);
        for _ in 0..count {
            let r = next();
            let src = match source {
                SynSource::Real(a) => a,
                SynSource::SpoofedRandom => {
                    Ipv4Addr::new(198, 19, (r >> 8) as u8, (r >> 16) as u8 | 1)
                }
            };
            let sport = 1024 + (r >> 24) as u16 % 60_000;
            buf.clear();
            PacketBuilder::ipv4(src.octets(), to.octets(), 64)
                .tcp(sport, port, (r >> 32) as u32, 64_240)
                .syn()
                .write(&mut buf, &[])
                .map_err(|e| Error::Usage(format!("building a SYN: {e}")))?;
            // SAFETY: buf and dst are valid for the duration of the call.
            let rc = unsafe {
                libc::sendto(
                    raw,
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&dst as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                sent += 1;
            }
        }
        Ok(sent)
    })?
}
