//! Items as JSON lines, one object per item (`{"task","table","url","crawled_at","data"}`).
//! Items only: the crawl state never goes here.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::{Commit, Sink, SinkError};

/// A JSON-lines file of items.
pub struct JsonlSink {
    out: BufWriter<File>,
}

impl JsonlSink {
    /// Creates (truncates) the output file.
    pub fn create(path: &Path) -> Result<JsonlSink, SinkError> {
        Self::open(path, false)
    }

    /// Opens the output file, appending to it (a resumed run) or truncating it. Appending
    /// first cuts a last line that a killed process left half written, so that the file stays
    /// one JSON object per line.
    pub fn open(path: &Path, append: bool) -> Result<JsonlSink, SinkError> {
        let err =
            |e: std::io::Error| SinkError { sink: "jsonl", message: format!("{}: {e}", path.display()) };
        let mut file = OpenOptions::new()
            .create(true)
            .read(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .map_err(err)?;
        if append {
            let whole = whole_lines(&mut file).map_err(err)?;
            file.set_len(whole).map_err(err)?;
            file.seek(SeekFrom::Start(whole)).map_err(err)?;
        }
        Ok(JsonlSink { out: BufWriter::with_capacity(64 * 1024, file) })
    }
}

/// The length of a file up to and including its last newline.
fn whole_lines(file: &mut File) -> std::io::Result<u64> {
    let mut end = file.seek(SeekFrom::End(0))?;
    let mut buf = vec![0; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

impl Sink for JsonlSink {
    fn write(&mut self, batch: &[Commit]) -> Result<(), SinkError> {
        let err = |e: std::io::Error| SinkError { sink: "jsonl", message: e.to_string() };
        for c in batch {
            // A fenced run's items were refused by the database; keep the file in step with it.
            if c.run.as_ref().is_some_and(|r| r.is_fenced()) {
                continue;
            }
            if let Some(item) = &c.item {
                serde_json::to_writer(&mut self.out, item).map_err(|e| err(e.into()))?;
                self.out.write_all(b"\n").map_err(err)?;
            }
        }
        self.out.flush().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appending_cuts_a_half_written_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.jsonl");
        // A long first line: the newline search reads the file backwards in chunks.
        let long = format!("{{\"a\":\"{}\"}}\n", "x".repeat(100_000));
        for (before, after) in [
            (format!("{long}{{\"b\":1}}\n{{\"c\":"), format!("{long}{{\"b\":1}}\n")),
            (format!("{long}{{\"b\":1}}\n"), format!("{long}{{\"b\":1}}\n")),
            (format!("{long}{{\"b\""), long.clone()),
            ("{\"half".to_string(), String::new()),
            (String::new(), String::new()),
        ] {
            std::fs::write(&path, &before).unwrap();
            let mut sink = JsonlSink::open(&path, true).unwrap();
            sink.out.write_all(b"{\"d\":2}\n").unwrap();
            sink.out.flush().unwrap();
            drop(sink);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{after}{{\"d\":2}}\n"));
        }
        // Not appending still truncates.
        drop(JsonlSink::open(&path, false).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}
