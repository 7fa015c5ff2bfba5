//! Flow-log lines in every format Astra reads: a record either fails with a line number or
//! becomes flow entries that make sense (packets in each, time running forwards).
#![no_main]

use astra::replay::flowlog::{ArgusCsv, ZeekTsv, zeek_json_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (mut tsv, mut argus) = (ZeekTsv::new(), ArgusCsv::new());
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        for conn in [tsv.line(n, line), zeek_json_line(n, line), argus.line(n, line)]
            .into_iter()
            .flatten()
            .flatten()
        {
            assert!(conn.start_ns <= conn.end_ns);
            for (_, v) in conn.entries(|t| t) {
                assert!(v.packets > 0);
                assert!(v.first_seen_ns <= v.last_seen_ns);
                assert!(v.bytes >= v.packets);
            }
        }
    }
});
