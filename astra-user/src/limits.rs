//! Every size limit Astra applies to what it reads, in one place (the README's "Limits" table
//! lists them): files are read through [`read_capped`], so a path that points at `/dev/zero`
//! or a runaway file costs at most the limit, not the machine's memory.
use std::{io::Read as _, path::Path};

use crate::error::{Error, Result};

/// `--config` files.
pub const CONFIG_FILE: u64 = 1 << 20;
/// Lab scenario files.
pub const SCENARIO_FILE: u64 = 1 << 20;
/// Model files (`model.json`, `model import-sklearn`): a forest of 1000 trees of 512 samples
/// is about 40 MB of JSON.
pub const MODEL_FILE: u64 = 64 << 20;
/// Training rows (`model train --rows`).
pub const ROWS_FILE: u64 = 256 << 20;
/// Blocklist feeds (a file or standard input): a million addresses with comments is ~60 MB.
pub const FEED_FILE: u64 = 256 << 20;
/// A CrowdSec LAPI's decision stream, one pull: about 200 bytes a decision, so a million.
pub const CROWDSEC_STREAM: u64 = 256 << 20;
/// One line of an EVE event log.
pub const EVE_LINE: u64 = 1 << 20;
/// The agent's own small files (status, token).
pub const SMALL_FILE: u64 = 1 << 20;
/// Free text stored with an entry (a block's reason, a feed comment), in characters; longer
/// text is cut (feeds) or refused (CLI and API).
pub const REASON_CHARS: usize = 512;

/// Refuses a reason longer than [`REASON_CHARS`] (CLI and API; feeds cut theirs instead).
pub fn check_reason(reason: &str) -> Result<()> {
    let n = reason.chars().count();
    if n > REASON_CHARS {
        return Err(Error::Usage(format!(
            "reason is {n} characters long; at most {REASON_CHARS} are kept with an entry"
        )));
    }
    Ok(())
}

/// `s` cut to at most `max` characters (on a character boundary).
pub fn cut_chars(s: &mut String, max: usize) {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
}

/// Reads at most `cap` bytes of `path` (`-` is standard input), refusing a larger one with one
/// line naming the file and the limit.
pub fn read_capped(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let r = if path == Path::new("-") {
        std::io::stdin().take(cap + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
    };
    r.map_err(|e| {
        if crate::files::operator_fixable(&e) {
            Error::Usage(format!("cannot read {}: {e}", path.display()))
        } else {
            Error::io(path, e)
        }
    })?;
    if bytes.len() as u64 > cap {
        return Err(Error::Usage(format!(
            "{}: {what} is larger than {} bytes, the limit for {what}s",
            path.display(),
            cap
        )));
    }
    Ok(bytes)
}

/// [`read_capped`] for text; invalid UTF-8 is an error naming the file.
pub fn read_text_capped(path: &Path, cap: u64, what: &str) -> Result<String> {
    String::from_utf8(read_capped(path, cap, what)?)
        .map_err(|e| Error::Usage(format!("{}: {what} is not UTF-8: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_costs_the_limit_and_names_the_file() {
        let err = read_capped(Path::new("/dev/zero"), 4096, "config file").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero: config file is larger than 4096 bytes, the limit for config files"
        );
        assert_eq!(err.exit_code(), 2);
        assert!(
            read_capped(Path::new("/dev/null"), 4096, "x")
                .unwrap()
                .is_empty()
        );
        let err = read_capped(Path::new("/nonexistent/x"), 1, "x").unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }
}
