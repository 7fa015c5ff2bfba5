//! Output shared by the verbs: JSON for scripts, borderless tables and readable times for people.
use std::time::Duration;

use comfy_table::{Table, presets};
use serde::Serialize;

use crate::error::Result;

pub fn print_json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v).expect("serialisable");
    println!("{s}");
    Ok(())
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().copied());
    t
}

pub fn fmt_secs(s: u64) -> String {
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

pub fn fmt_time(unix: u64) -> String {
    crate::clock::rfc3339_seconds(unix)
}
