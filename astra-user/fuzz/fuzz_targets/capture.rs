//! A capture file, whole: every frame the reader hands out fits what a test run takes, and
//! reading stops (no loop, no panic) however the file is broken.
#![no_main]

use astra::replay::capture::{Capture, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut cap) = Capture::from_bytes(data.to_vec()) else {
        return;
    };
    let mut records = 0usize;
    while let Ok(Some(f)) = cap.next_frame() {
        if let Some(frame) = f.frame {
            assert!(frame.len() <= MAX_FRAME, "{} bytes", frame.len());
        }
        records += 1;
        // Every record takes at least its 16-byte header (pcapng's 12 bytes less, plus data).
        assert!(records <= data.len() / 8 + 1);
    }
});
