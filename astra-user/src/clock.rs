//! Every clock Astra reads, in one place. Two time bases meet here:
//!
//! - wall-clock UNIX time ([`now_unix`], [`now_ms`]): what the store, the event log and people
//!   see, and what list expiries are written in;
//! - `CLOCK_MONOTONIC` in nanoseconds ([`mono_now_ns`]): what the dataplane stamps flows with
//!   and compares kernel expiries against (`bpf_ktime_get_coarse_ns` ticks on the same clock).
//!
//! `astra replay` judges a capture on the capture's own clock: while [`set_virtual`] holds a
//! time on a thread, every clock here reads that time on that thread, both time bases alike
//! (the replay's dataplane is stamped with the same value), so expiries, windows and the event
//! log all follow the capture.
//!
//! A wall clock set before 1970 reads as 0 rather than failing, and times beyond what RFC 3339
//! can write are clamped, so no input can make a formatter panic.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    static VIRTUAL_NS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Makes every clock of this module read `unix_ns` (UNIX nanoseconds) on the calling thread,
/// as both wall-clock and monotonic time, until it is set again or cleared with `None`.
pub fn set_virtual(unix_ns: Option<u64>) {
    VIRTUAL_NS.with(|v| v.set(unix_ns));
}

fn virtual_ns() -> Option<u64> {
    VIRTUAL_NS.with(std::cell::Cell::get)
}

/// Current wall-clock time in UNIX seconds. A clock set before 1970 yields 0, which makes every
/// expiring entry look fresh rather than crashing the agent.
pub fn now_unix() -> u64 {
    if let Some(ns) = virtual_ns() {
        return ns / 1_000_000_000;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Current wall-clock time in UNIX milliseconds (0 before 1970, like [`now_unix`]).
pub fn now_ms() -> u64 {
    if let Some(ns) = virtual_ns() {
        return ns / 1_000_000;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the dataplane's expiries are compared against.
pub fn mono_now_ns() -> u64 {
    if let Some(ns) = virtual_ns() {
        return ns;
    }
    clock_ns(libc::clock_gettime, libc::CLOCK_MONOTONIC)
}

/// The resolution of CLOCK_MONOTONIC_COARSE, the clock XDP reads, in nanoseconds.
pub fn coarse_tick_ns() -> u64 {
    clock_ns(libc::clock_getres, libc::CLOCK_MONOTONIC_COARSE)
}

/// A clock's time (`clock_gettime`) or resolution (`clock_getres`) in nanoseconds.
fn clock_ns(
    read: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int,
    clock: libc::clockid_t,
) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; the monotonic clocks, coarse ones included, exist on every
    // kernel that runs XDP.
    unsafe { read(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A monotonic kernel timestamp as wall-clock UNIX seconds, given both clocks read now.
pub fn mono_to_unix(ns: u64, now_unix: u64, now_mono: u64) -> u64 {
    now_unix.saturating_sub(now_mono.saturating_sub(ns) / 1_000_000_000)
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z). humantime panics beyond it,
/// and `UNIX_EPOCH + d` does near u64::MAX, so later stamps (a hand-edited model or a hostile
/// import) are clamped to it.
pub const MAX_RFC3339_S: u64 = 253_402_300_799;

fn clamped(unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms.min(MAX_RFC3339_S * 1000))
}

/// RFC 3339 with microseconds (the event log's timestamps), clamped to year 9999.
pub fn rfc3339_micros(unix_ms: u64) -> String {
    humantime::format_rfc3339_micros(clamped(unix_ms)).to_string()
}

/// RFC 3339 to the second, for tables; clamped like [`rfc3339_micros`].
pub fn rfc3339_seconds(unix_s: u64) -> String {
    humantime::format_rfc3339_seconds(clamped(unix_s.saturating_mul(1000))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_year_9999_are_clamped_not_a_panic() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(MAX_RFC3339_S), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_seconds(MAX_RFC3339_S + 1), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_seconds(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_micros(u64::MAX), "9999-12-31T23:59:59.000000Z");
    }

    #[test]
    fn wall_and_monotonic_clocks_are_plausible() {
        // After 2020 and before 2100.
        assert!((1_577_836_800..4_102_444_800).contains(&now_unix()));
        assert!(now_ms() / 1000 >= now_unix() - 1);
        let (a, b) = (mono_now_ns(), mono_now_ns());
        assert!(a > 0 && b >= a);
        assert!(coarse_tick_ns() > 0);
        assert_eq!(mono_to_unix(b, 1000, b), 1000);
        assert_eq!(mono_to_unix(b - 5_000_000_000, 1000, b), 995);
    }

    #[test]
    fn a_virtual_time_holds_on_its_thread_only() {
        set_virtual(Some(1_234_567_890_123_456_789));
        assert_eq!(now_unix(), 1_234_567_890);
        assert_eq!(now_ms(), 1_234_567_890_123);
        assert_eq!(mono_now_ns(), 1_234_567_890_123_456_789);
        let other = std::thread::spawn(now_unix).join().unwrap();
        assert!(other > 1_577_836_800, "another thread keeps the real clock");
        set_virtual(None);
        assert!(now_unix() > 1_577_836_800);
    }
}
