//! Shortening command output for the model: the first and last bytes of what a command wrote,
//! with one marker naming how many bytes were left out between them.
//!
//! The sandbox already keeps only a head and a tail of each stream; this works on what it kept
//! and never shows bytes out of order: the head stops where the sandbox's gap starts, the tail
//! starts where it ends.

use sandbox::Captured;

/// What is shown of a command's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortened {
    pub text: String,
    /// Bytes written but not shown.
    pub elided_bytes: u64,
    /// Bytes written in all.
    pub total_bytes: u64,
}

/// Pieces of the logical output (the streams one after the other) with their positions.
enum Piece<'a> {
    Data(&'a [u8]),
    Gap(u64),
}

/// Shows at most `head` bytes from the start and `tail` bytes from the end of the streams
/// taken one after the other.
pub fn shorten(streams: &[&Captured], head: usize, tail: usize) -> Shortened {
    let mut pieces = Vec::new();
    for stream in streams {
        pieces.push(Piece::Data(&stream.head));
        if stream.elided_bytes() > 0 {
            pieces.push(Piece::Gap(stream.elided_bytes()));
        }
        pieces.push(Piece::Data(&stream.tail));
    }
    let total: u64 = streams.iter().map(|s| s.total_bytes).sum();
    // Where the first gap starts and the last one ends, in logical positions.
    let mut position = 0u64;
    let (mut first_gap, mut last_gap_end) = (None, 0u64);
    for piece in &pieces {
        match piece {
            Piece::Data(bytes) => position += bytes.len() as u64,
            Piece::Gap(n) => {
                first_gap.get_or_insert(position);
                position += n;
                last_gap_end = position;
            }
        }
    }
    let head_end = (head as u64).min(first_gap.unwrap_or(total)).min(total);
    let tail_start = total
        .saturating_sub(tail as u64)
        .max(last_gap_end)
        .max(head_end);
    let elided_bytes = tail_start - head_end;
    let range = |start: u64, end: u64| {
        let mut out = Vec::new();
        let mut position = 0u64;
        for piece in &pieces {
            match piece {
                Piece::Data(bytes) => {
                    let (from, to) = (position, position + bytes.len() as u64);
                    let (a, b) = (start.max(from), end.min(to));
                    if a < b {
                        out.extend_from_slice(&bytes[(a - from) as usize..(b - from) as usize]);
                    }
                    position = to;
                }
                Piece::Gap(n) => position += n,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let text = if elided_bytes == 0 {
        range(0, total)
    } else {
        format!(
            "{}\n[... {elided_bytes} bytes elided ...]\n{}",
            range(0, head_end),
            range(tail_start, total)
        )
    };
    Shortened {
        text,
        elided_bytes,
        total_bytes: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(data: &[u8], head: usize, tail: usize) -> Captured {
        let mut capture = sandbox::Capture::new(head, tail);
        capture.push(data);
        capture.finish()
    }

    /// Output `out` (kept by the sandbox as `sandbox_head`/`sandbox_tail`), then `err`, shown
    /// with `head`/`tail`.
    fn check(
        out: &str,
        sandbox_keep: (usize, usize),
        err: &str,
        shown: (usize, usize),
        expected: &str,
        elided: u64,
    ) {
        let out = captured(out.as_bytes(), sandbox_keep.0, sandbox_keep.1);
        let err = captured(err.as_bytes(), 1000, 1000);
        let got = shorten(&[&out, &err], shown.0, shown.1);
        assert_eq!(got.text, expected);
        assert_eq!(got.elided_bytes, elided);
    }

    #[test]
    fn shortening() {
        check("hello\n", (100, 100), "", (10, 10), "hello\n", 0);
        check("", (100, 100), "", (10, 10), "", 0);
        check("0123456789", (100, 100), "", (5, 5), "0123456789", 0);
        check(
            "0123456789abcdef",
            (100, 100),
            "",
            (4, 3),
            "0123\n[... 9 bytes elided ...]\ndef",
            9,
        );
        check("out", (100, 100), "err", (10, 10), "outerr", 0);
        check(
            "0123456789",
            (100, 100),
            "ABCDEFGHIJ",
            (4, 4),
            "0123\n[... 12 bytes elided ...]\nGHIJ",
            12,
        );
        // The sandbox left out the middle: never show bytes across its gap.
        check(
            "0123456789",
            (3, 3),
            "",
            (5, 5),
            "012\n[... 4 bytes elided ...]\n789",
            4,
        );
        check(
            "0123456789",
            (6, 2),
            "",
            (4, 4),
            "0123\n[... 4 bytes elided ...]\n89",
            4,
        );
        // Nothing shown at all still says how much there was.
        check(
            "abc",
            (100, 100),
            "",
            (0, 0),
            "\n[... 3 bytes elided ...]\n",
            3,
        );
    }
}
