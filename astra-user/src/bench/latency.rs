//! `latency`: from a flood's first packet to the first packet the kernel drops.
use std::time::{Duration, Instant};

use super::*;
use crate::{
    error::{Error, Result},
    lab::traffic,
};

/// From the first packet of a SYN flood to the first packet the kernel drops, with the agent
/// at its default settings (1 s polls).
pub fn detection_latency(out: &mut Vec<Measurement>) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    let mut v = Vec::new();
    for i in 0..3 {
        let mut topo = crate::lab::Topology::build(&format!("{}-b{i}", std::process::id()))?;
        topo.start_agent(&exe, &[])?;
        let (target, me) = (topo.attackers[0].server_addr, topo.attackers[0].addr);
        let t0 = Instant::now();
        let topo = &topo;
        let seen = std::thread::scope(|s| {
            // About 2000 SYNs a second from one address, until the kernel drops them (or 5 s).
            s.spawn(move || {
                while t0.elapsed() < Duration::from_secs(5) && topo.kernel_drops() == 0 {
                    let attacker = &topo.attackers[0].ns;
                    if traffic::syn_flood(attacker, traffic::SourceAddr::Real(me), target, 80, 20)
                        .is_err()
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            while t0.elapsed() < Duration::from_secs(6) {
                if topo.kernel_drops() > 0 {
                    return Some(t0.elapsed().as_secs_f64());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        });
        v.extend(seen);
    }
    if v.is_empty() {
        return Err(Error::Usage("no kernel drop within 6 s in any run".into()));
    }
    out.push(m(
        "detection latency, first attack packet to kernel drop (1 s polls)",
        median(v),
        "s",
        None,
        "< 2 s",
    ));
    Ok(())
}
