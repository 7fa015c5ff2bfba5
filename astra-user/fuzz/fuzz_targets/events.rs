//! A `POST /api/v1/events` body: accepted events are all well-formed, whatever came in.
#![no_main]

use astra::agent::api::{EVENTS_PER_REQUEST, parse_login_events};
use libfuzzer_sys::fuzz_target;

const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = parse_login_events(data, NOW_MS) {
        assert!(events.len() <= EVENTS_PER_REQUEST);
        for e in events {
            assert!(e.dst_port > 0);
            assert!(e.ts_ms <= NOW_MS + 60_000);
        }
    }
});
