//! Items as JSON lines, one object per item (`{"task","table","url","crawled_at","data"}`).
//! Items only: the crawl state never goes here.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
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

    /// Opens the output file, appending to it (a resumed run) or truncating it.
    pub fn open(path: &Path, append: bool) -> Result<JsonlSink, SinkError> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| SinkError { sink: "jsonl", message: format!("{}: {e}", path.display()) })?;
        Ok(JsonlSink { out: BufWriter::with_capacity(64 * 1024, file) })
    }
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
