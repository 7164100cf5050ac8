//! Bounded capture of a command's output: the first and last bytes, and a count of the rest.

use serde::{Deserialize, Serialize};

/// What was kept of one output stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// The first bytes written.
    pub head: Vec<u8>,
    /// The last bytes written, if more than `head` could hold; empty otherwise.
    pub tail: Vec<u8>,
    /// Every byte written, kept or not.
    pub total_bytes: u64,
}

impl Captured {
    /// Bytes written but neither in `head` nor in `tail`.
    pub fn elided_bytes(&self) -> u64 {
        self.total_bytes - self.head.len() as u64 - self.tail.len() as u64
    }

    pub fn is_truncated(&self) -> bool {
        self.elided_bytes() > 0
    }

    /// Writes the kept bytes as they are, with a marker line where bytes were left out.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.head)?;
        if self.is_truncated() {
            writeln!(out, "\n[... {} bytes elided ...]", self.elided_bytes())?;
        }
        out.write_all(&self.tail)
    }

    /// The output as text, lossily decoded, with a marker where bytes were left out.
    pub fn to_text(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.is_truncated() {
            out.push_str(&format!(
                "\n[... {} bytes elided ...]\n",
                self.elided_bytes()
            ));
        }
        out.push_str(&String::from_utf8_lossy(&self.tail));
        out
    }
}

/// Accumulates a stream into a [`Captured`] with bounded memory.
pub struct Capture {
    head_limit: usize,
    tail_limit: usize,
    head: Vec<u8>,
    /// Ring buffer of the last `tail_limit` bytes after the head filled up.
    ring: Vec<u8>,
    ring_start: usize,
    total: u64,
}

impl Capture {
    pub fn new(head_limit: usize, tail_limit: usize) -> Capture {
        Capture {
            head_limit,
            tail_limit,
            head: Vec::new(),
            ring: Vec::new(),
            ring_start: 0,
            total: 0,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_limit - self.head.len();
        let n = room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        if self.tail_limit == 0 || bytes.is_empty() {
            return;
        }
        if bytes.len() >= self.tail_limit {
            self.ring.clear();
            self.ring
                .extend_from_slice(&bytes[bytes.len() - self.tail_limit..]);
            self.ring_start = 0;
            return;
        }
        for &b in bytes {
            if self.ring.len() < self.tail_limit {
                self.ring.push(b);
            } else {
                self.ring[self.ring_start] = b;
                self.ring_start = (self.ring_start + 1) % self.tail_limit;
            }
        }
    }

    pub fn finish(self) -> Captured {
        let mut tail = Vec::with_capacity(self.ring.len());
        tail.extend_from_slice(&self.ring[self.ring_start..]);
        tail.extend_from_slice(&self.ring[..self.ring_start]);
        Captured {
            head: self.head,
            tail,
            total_bytes: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `input` in chunks of `chunk` bytes and compares with a direct computation.
    fn check(input: &[u8], head: usize, tail: usize, chunk: usize) {
        let mut capture = Capture::new(head, tail);
        for piece in input.chunks(chunk.max(1)) {
            capture.push(piece);
        }
        let got = capture.finish();
        let want_head = &input[..head.min(input.len())];
        let rest = &input[want_head.len()..];
        let want_tail = &rest[rest.len().saturating_sub(tail)..];
        assert_eq!(
            got.head, want_head,
            "head of {input:?} ({head}/{tail}/{chunk})"
        );
        assert_eq!(
            got.tail, want_tail,
            "tail of {input:?} ({head}/{tail}/{chunk})"
        );
        assert_eq!(got.total_bytes, input.len() as u64);
        assert_eq!(got.elided_bytes(), (rest.len() - want_tail.len()) as u64);
    }

    #[test]
    fn head_and_tail_are_kept_whatever_the_chunking() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for (head, tail) in [
            (0, 0),
            (10, 0),
            (0, 10),
            (10, 10),
            (100, 7),
            (2000, 5),
            (3, 999),
        ] {
            for chunk in [1, 3, 7, 64, 1000] {
                check(&data, head, tail, chunk);
                check(&data[..5], head, tail, chunk);
                check(&[], head, tail, chunk);
            }
        }
    }

    #[test]
    fn text_marks_elision() {
        let mut capture = Capture::new(3, 3);
        capture.push(b"abcdefghij");
        assert_eq!(
            capture.finish().to_text(),
            "abc\n[... 4 bytes elided ...]\nhij"
        );
    }
}
