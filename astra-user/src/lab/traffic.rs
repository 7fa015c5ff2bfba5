//! Built-in traffic generators for the lab and the tests: benign request/response sessions,
//! scans, login-attempt bursts and raw SYN floods (optionally from spoofed sources). They need
//! no outside tool, and every one of them is bounded in count and time.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;

use crate::{
    error::{Error, Result},
    lab::netns::Netns,
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
        crate::lab::netns::in_ns(&path, move || {
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

/// Where a raw flood (SYN or UDP) claims to come from.
#[derive(Clone, Copy, Debug)]
pub enum SourceAddr {
    /// The sender's real address: the flood can be traced and blocked.
    Real(Ipv4Addr),
    /// A different random address in 198.18.128.0/17 for every packet.
    SpoofedRandom,
}

impl SourceAddr {
    /// `addr` itself, or random spoofed addresses.
    pub fn new(addr: Ipv4Addr, spoofed: bool) -> Self {
        if spoofed {
            SourceAddr::SpoofedRandom
        } else {
            SourceAddr::Real(addr)
        }
    }

    fn pick(self, r: u64) -> Ipv4Addr {
        match self {
            SourceAddr::Real(a) => a,
            SourceAddr::SpoofedRandom => spoofed(r),
        }
    }
}

/// A random address in 198.18.128.0/17: inside the test range, outside every lab subnet.
fn spoofed(r: u64) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 128 | (r >> 8) as u8, (r >> 16) as u8 | 1)
}

/// xorshift: cheap, deterministic and good enough for ports and addresses.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sends `count` IPv4 packets built by `build` (given a random number) through a raw socket
/// in `ns`. Returns the packets sent.
fn raw_flood(
    ns: &Netns,
    to: Ipv4Addr,
    count: u64,
    seed: u64,
    build: impl Fn(u64, &mut Vec<u8>) -> Result<()> + Send + 'static,
) -> Result<u64> {
    ns.run(move || -> Result<u64> {
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
        // Each call draws fresh ports and addresses: repeated short bursts must not replay
        // the same few conversations.
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let mut rng = XorShift(
            0x9e37_79b9_7f4a_7c15 ^ seed ^ count ^ call.wrapping_mul(0xbf58_476d_1ce4_e5b9),
        );
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut sent = 0;
        let mut buf = Vec::with_capacity(1500);
        for _ in 0..count {
            buf.clear();
            build(rng.next(), &mut buf)?;
            // SAFETY: buf and dst are valid for the duration of the call.
            let rc = unsafe {
                libc::sendto(
                    raw,
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&dst as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                sent += 1;
            }
        }
        Ok(sent)
    })?
}

fn built(e: etherparse::err::packet::BuildWriteError) -> Error {
    Error::Usage(format!("building a packet: {e}"))
}

/// Sends `count` TCP SYNs to `to:port` from `ns` through a raw socket, with random source
/// ports (and random source addresses when spoofed). Returns the packets sent.
pub fn syn_flood(
    ns: &Netns,
    source: SourceAddr,
    to: Ipv4Addr,
    port: u16,
    count: u64,
) -> Result<u64> {
    raw_flood(ns, to, count, u64::from(port), move |r, buf| {
        let src = source.pick(r);
        PacketBuilder::ipv4(src.octets(), to.octets(), 64)
            .tcp(
                1024 + (r >> 24) as u16 % 60_000,
                port,
                (r >> 32) as u32,
                64_240,
            )
            .syn()
            .write(buf, &[])
            .map_err(built)
    })
}

/// `count` UDP datagrams of `size` payload bytes to `to`, over 1000 destination ports; from
/// `source`'s address or from random spoofed ones.
pub fn udp_flood(
    ns: &Netns,
    source: SourceAddr,
    to: Ipv4Addr,
    count: u64,
    size: usize,
) -> Result<u64> {
    let payload = vec![0u8; size];
    raw_flood(ns, to, count, size as u64, move |r, buf| {
        let src = source.pick(r);
        PacketBuilder::ipv4(src.octets(), to.octets(), 64)
            .udp(
                1024 + (r >> 24) as u16 % 60_000,
                10_000 + (r >> 40) as u16 % 1000,
            )
            .write(buf, &payload)
            .map_err(built)
    })
}

/// `count` answers nobody asked for: UDP datagrams of `size` payload bytes from port 53 of
/// random spoofed sources to random ports of `to`, as a DNS reflection flood reaches its
/// victim.
pub fn reflection_flood(ns: &Netns, to: Ipv4Addr, count: u64, size: usize) -> Result<u64> {
    let payload = vec![0u8; size];
    raw_flood(ns, to, count, 53, move |r, buf| {
        PacketBuilder::ipv4(spoofed(r).octets(), to.octets(), 64)
            .udp(53, 1024 + (r >> 24) as u16 % 60_000)
            .write(buf, &payload)
            .map_err(built)
    })
}

/// `count` ICMP echo requests from `from` to `to`.
pub fn icmp_flood(ns: &Netns, from: Ipv4Addr, to: Ipv4Addr, count: u64) -> Result<u64> {
    raw_flood(ns, to, count, 1, move |r, buf| {
        PacketBuilder::ipv4(from.octets(), to.octets(), 64)
            .icmpv4_echo_request((r >> 16) as u16, r as u16)
            .write(buf, &[0u8; 56])
            .map_err(built)
    })
}

/// Connects to port `port` of `hosts` addresses 198.19.0.1, 198.19.0.2, ... (the lab's
/// server answers for all of them). Returns the connections that were answered.
pub fn host_sweep(ns: &Netns, hosts: u16, port: u16) -> Result<usize> {
    ns.run(move || {
        (0..hosts)
            .filter(|i| {
                let a = Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250) as u8 + 1);
                TcpStream::connect_timeout(&SocketAddr::from((a, port)), Duration::from_millis(100))
                    .is_ok()
            })
            .count()
    })
}

/// Sends `bytes` over one TCP connection from `from` to a receiver in `to` listening on
/// `addr`. Returns the bytes the receiver got.
pub fn upload(from: &Netns, to: &Netns, addr: Ipv4Addr, bytes: u64) -> Result<u64> {
    let listener = to
        .run(move || TcpListener::bind((addr, 0)))?
        .map_err(|e| Error::io("upload receiver", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("upload receiver", e))?
        .port();
    let receiver = std::thread::spawn(move || -> u64 {
        let Ok((mut s, _)) = listener.accept() else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        got
    });
    from.run(move || {
        if let Ok(mut s) =
            TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(2))
        {
            // A sender cut off mid-upload (blocked, quarantined) would otherwise wait out
            // TCP's retransmissions, a quarter of an hour.
            let _ = s.set_write_timeout(Some(Duration::from_secs(3)));
            let chunk = vec![0x5au8; 1 << 16];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if s.write_all(&chunk[..n]).is_err() {
                    break;
                }
                left -= n as u64;
            }
        }
    })?;
    Ok(receiver.join().unwrap_or(0))
}

/// Runs `program args` in `ns`, killing it after `timeout`. Output is discarded; the exit
/// status is returned (`None` when it had to be killed).
pub fn run_tool(
    ns: &Netns,
    program: &str,
    args: &[String],
    timeout: Duration,
) -> Result<Option<i32>> {
    let mut child = ns
        .lab_command(program)?
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Error::Usage(format!("cannot run {program}: {e}")))?;
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().map_err(|e| Error::io(program, e))? {
            // What it forked and left running goes with it (the group outlives its leader).
            // SAFETY: a signal to the group the reaped child led; nothing else joins it.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            return Ok(st.code());
        }
        if Instant::now() >= end {
            crate::lab::netns::kill_group(&mut child);
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `program` can be found on PATH (or is an absolute path that exists).
pub fn have_tool(program: &str) -> bool {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.exists();
    }
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|d| d.join(program).is_file())
        })
        .unwrap_or(false)
}
