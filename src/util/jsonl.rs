//! JSON Lines read the way a journal is written: one record per line, a line
//! counting only once its newline is there. Run journals and `score FILE.jsonl`
//! share this reader so that they agree on every line; it lives here, below both,
//! so that neither imports the other for it.

use std::io::BufRead;

/// Where one record's line is in its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLocation {
    pub offset: u64,
    /// Newline included.
    pub len: u64,
}

impl JournalLine<'_> {
    pub fn location(&self) -> RecordLocation {
        RecordLocation {
            offset: self.offset,
            len: self.len,
        }
    }
}

/// Longest journal line read. A record with its traces is a few KB; anything near
/// this is not a journal, and reading it on would only exhaust memory.
pub const MAX_LINE_BYTES: usize = 256 << 20;

/// One complete line of a journal, as [`scan_lines`] hands it out.
#[derive(Debug, Clone, Copy)]
pub struct JournalLine<'a> {
    /// 1-based line number (blank lines count).
    pub number: usize,
    /// Byte offset of the line's first byte in the file.
    pub offset: u64,
    /// Bytes of the line including its newline (what to read back to get it again).
    pub len: u64,
    /// The line without its newline and surrounding whitespace (and without a
    /// byte order mark on line 1).
    pub text: &'a [u8],
}

/// What a scan learned besides the lines themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalScan {
    /// Byte length of the complete lines (where the next append belongs).
    pub complete_len: u64,
    /// The last line had no newline: a write cut short. It was not handed out.
    pub torn_last_line: bool,
    /// Non-blank complete lines handed out.
    pub lines: usize,
}

/// The one rule every journal reader follows (resume, run folders, the Runs list,
/// `score FILE.jsonl`): a line counts once its newline is written. The writer puts
/// the newline last in the same write, so a last line without one is a write cut
/// short and is left out (reported as `torn_last_line`) even when its bytes happen
/// to parse; blank lines are skipped. Lines stream through one reused buffer, so
/// memory does not grow with the journal.
///
/// `each` gets every complete non-blank line and decides what a bad one means.
pub fn scan_lines<R: BufRead, E>(
    mut reader: R,
    mut each: impl FnMut(JournalLine<'_>) -> Result<(), E>,
    read_err: impl Fn(std::io::Error) -> E,
) -> Result<JournalScan, E> {
    let mut scan = JournalScan::default();
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut number = 0usize;
    loop {
        buf.clear();
        let n = read_line_limited(&mut reader, &mut buf, number + 1).map_err(&read_err)?;
        if n == 0 {
            break;
        }
        number += 1;
        let terminated = buf.last() == Some(&b'\n');
        let mut text = buf.trim_ascii();
        if number == 1 {
            text = text
                .strip_prefix(b"\xEF\xBB\xBF")
                .unwrap_or(text)
                .trim_ascii();
        }
        let len = n as u64;
        if !terminated {
            // Only the last read can end without a newline.
            scan.torn_last_line = !text.is_empty();
            break;
        }
        if !text.is_empty() {
            scan.lines += 1;
            each(JournalLine {
                number,
                offset,
                len,
                text,
            })?;
        }
        offset += len;
        scan.complete_len = offset;
    }
    Ok(scan)
}

/// `read_until(b'\n')` that refuses a line longer than [`MAX_LINE_BYTES`].
fn read_line_limited<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    number: usize,
) -> std::io::Result<usize> {
    let mut total = 0usize;
    loop {
        let (done, used) = {
            let available = match reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(total);
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    buf.extend_from_slice(&available[..=i]);
                    (true, i + 1)
                }
                None => {
                    buf.extend_from_slice(available);
                    (false, available.len())
                }
            }
        };
        reader.consume(used);
        total += used;
        if total > MAX_LINE_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {number} is longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        if done {
            return Ok(total);
        }
    }
}
