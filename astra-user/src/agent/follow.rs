//! Following a growing log file, as `tail -F` does: the lines added since the last look, a
//! line still being written held back until it is whole, and the file read again from its
//! start when it is rotated (another file at the path) or truncated.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// What reading a followed file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The file was opened anew (rotation, truncation, or it appeared): what follows is read
    /// from its start.
    Reopened,
    Text(&'a str),
}

/// One followed file.
pub struct Follow {
    path: PathBuf,
    /// (reader, inode, position)
    reader: Option<(BufReader<File>, u64, u64)>,
}

impl Follow {
    /// Follows `path` from its current end: what is already there is history, not news.
    pub fn at_end(path: PathBuf) -> Self {
        let mut f = Self { path, reader: None };
        f.reopen(true);
        f
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_open(&self) -> bool {
        self.reader.is_some()
    }

    /// Opens the file, at its end when `at_end`.
    fn reopen(&mut self, at_end: bool) {
        self.reader = File::open(&self.path).ok().and_then(|mut file| {
            let ino = file.metadata().ok()?.ino();
            let pos = if at_end {
                file.seek(SeekFrom::End(0)).ok()?
            } else {
                0
            };
            Some((BufReader::new(file), ino, pos))
        });
    }

    /// Hands `on` the lines added since the last call (a line longer than `max_line` is
    /// skipped whole), after [`Line::Reopened`] when the file was replaced.
    pub fn read_new(&mut self, max_line: usize, mut on: impl FnMut(Line<'_>)) {
        let meta = std::fs::metadata(&self.path).ok();
        let replaced = match (&self.reader, &meta) {
            (Some((_, ino, pos)), Some(m)) => m.ino() != *ino || m.len() < *pos,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if replaced {
            // A new file at the path (rotation) or a truncated one: its lines are all new.
            self.reopen(false);
            if self.reader.is_some() {
                on(Line::Reopened);
            }
        }
        let Some((reader, _, pos)) = self.reader.as_mut() else {
            return;
        };
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader
                .by_ref()
                .take(max_line as u64 + 1)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if line.last() != Some(&b'\n') {
                        if n > max_line {
                            // Skip the rest of an overlong line.
                            let mut rest = Vec::new();
                            let _ = reader.read_until(b'\n', &mut rest);
                            *pos += (n + rest.len()) as u64;
                            continue;
                        }
                        // A line still being written: read it whole next time.
                        let _ = reader.seek_relative(-(n as i64));
                        break;
                    }
                    *pos += n as u64;
                    on(Line::Text(&String::from_utf8_lossy(&line)));
                }
            }
        }
    }
}

/// The first lines of `path` that start with `#` (a Zeek log's header), at most `max`.
pub fn header_lines(path: &Path, max: usize) -> Vec<String> {
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    // Bounded: a header is a few hundred bytes, and a hostile file's first "line" may not end.
    BufReader::new(f.take(1 << 20))
        .lines()
        .map_while(Result::ok)
        .take_while(|l| l.starts_with('#'))
        .take(max)
        .collect()
}
