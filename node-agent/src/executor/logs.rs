//! A job's output as lines: the bytes of stdout and stderr, cut at newlines (and at
//! [`LOG_LINE_BYTES_MAX`]), decoded lossily, and forwarded up to [`LOG_BYTES_MAX`] per job.

use tokio::sync::mpsc;

/// A longer line is forwarded in pieces of this size.
pub const LOG_LINE_BYTES_MAX: usize = 16 * 1024;
/// Log bytes forwarded per job; the rest is dropped after one line that says so (the job keeps
/// running: its logs are a courtesy, its outputs are the result).
pub const LOG_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Which of the job's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line a job printed, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub text: String,
}

/// Cuts one stream's chunks into lines.
#[derive(Debug, Default)]
pub(super) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// The complete lines in `chunk` (with what came before it).
    pub(super) fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in chunk {
            if byte == b'\n' {
                lines.push(self.take());
            } else {
                self.partial.push(byte);
                if self.partial.len() >= LOG_LINE_BYTES_MAX {
                    lines.push(self.take());
                }
            }
        }
        lines
    }

    /// What is left after the stream ended without a final newline.
    pub(super) fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

/// Forwards lines to the caller's channel, counting bytes against [`LOG_BYTES_MAX`].
pub(super) struct LogSink {
    tx: mpsc::Sender<LogLine>,
    sent_bytes: u64,
    closed: bool,
}

impl LogSink {
    pub(super) fn new(tx: mpsc::Sender<LogLine>) -> Self {
        Self {
            tx,
            sent_bytes: 0,
            closed: false,
        }
    }

    pub(super) async fn send(&mut self, stream: LogStream, text: String) {
        if self.closed {
            return;
        }
        // +1 for the newline the line had.
        self.sent_bytes = self.sent_bytes.saturating_add(text.len() as u64 + 1);
        let line = if self.sent_bytes > LOG_BYTES_MAX {
            self.closed = true;
            LogLine {
                stream: LogStream::Stderr,
                text: format!(
                    "[aiforge] the job's logs passed {LOG_BYTES_MAX} bytes; the rest is not forwarded"
                ),
            }
        } else {
            LogLine { stream, text }
        };
        if self.tx.send(line).await.is_err() {
            // Nobody listens any more; the job itself goes on.
            self.closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn chunks_are_cut_into_lines_across_chunk_boundaries() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"hel"), Vec::<String>::new());
        assert_eq!(s.push(b"lo\r\nwor"), vec!["hello"]);
        assert_eq!(s.push(b"ld\n\n"), vec!["world", ""]);
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_line_longer_than_the_limit_comes_in_pieces() {
        let mut s = LineSplitter::default();
        let lines = s.push(&vec![b'x'; LOG_LINE_BYTES_MAX * 2 + 5]);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == LOG_LINE_BYTES_MAX));
        assert_eq!(s.finish().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn logs_beyond_the_limit_end_with_one_line_that_says_so() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut sink = LogSink::new(tx);
        let big = "y".repeat(LOG_LINE_BYTES_MAX);
        let mut received = Vec::new();
        for _ in 0..LOG_BYTES_MAX / LOG_LINE_BYTES_MAX as u64 + 3 {
            sink.send(LogStream::Stdout, big.clone()).await;
            while let Ok(line) = rx.try_recv() {
                received.push(line);
            }
        }
        sink.send(LogStream::Stdout, "after".into()).await;
        drop(sink);
        while let Some(line) = rx.recv().await {
            received.push(line);
        }
        let full_lines = received.iter().filter(|l| l.text == big).count() as u64;
        assert_eq!(full_lines, LOG_BYTES_MAX / (LOG_LINE_BYTES_MAX as u64 + 1));
        assert_eq!(received.len() as u64, full_lines + 1);
        assert!(received.last().unwrap().text.starts_with("[aiforge]"));
    }
}
