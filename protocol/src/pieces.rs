//! Bytes that travel as a stream's received pieces: taken from the stream
//! without a copy, and written to a file with as few system calls as
//! possible (one `writev` per chunk instead of a copy into one buffer).

use bytes::Bytes;
use std::io::{IoSlice, Write};

/// Most buffers one `writev` takes (Linux's `IOV_MAX`).
pub const IOV_MAX: usize = 1024;

/// Writes every byte of `pieces` in order at `w`'s position, in `writev`
/// calls of at most [`IOV_MAX`] buffers; returns how many bytes that was.
pub fn write_pieces<W: Write>(w: &mut W, pieces: &[Bytes]) -> std::io::Result<u64> {
    // Empty pieces are left out: a writev of only empty buffers writes 0
    // bytes, which would read as a full disk (WriteZero).
    let mut slices: Vec<IoSlice> = pieces
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| IoSlice::new(b))
        .collect();
    let mut left = &mut slices[..];
    let mut written = 0u64;
    while !left.is_empty() {
        let n = match w.write_vectored(&left[..left.len().min(IOV_MAX)]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        IoSlice::advance_slices(&mut left, n);
        written += n as u64;
    }
    Ok(written)
}

/// Where the bytes that follow a request come from, a piece at a time.
pub trait PieceSource {
    /// The next piece, of at most `max` bytes; `None` at the end.
    fn next_piece(&mut self, max: usize) -> impl std::future::Future<Output = std::io::Result<Option<Bytes>>> + Send;
}

/// Takes pieces from `src` until they hold exactly `want` bytes, appending
/// them to `parts`; `Ok(false)` when the source ends first.
pub async fn gather<S: PieceSource>(src: &mut S, want: usize, parts: &mut Vec<Bytes>) -> std::io::Result<bool> {
    let mut have = 0;
    while have < want {
        match src.next_piece(want - have).await? {
            Some(piece) => {
                have += piece.len();
                parts.push(piece);
            }
            None => return Ok(false),
        }
    }
    Ok(true)
}

impl PieceSource for quinn::RecvStream {
    /// The stream's own received buffer, without a copy.
    async fn next_piece(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        match self.read_chunk(max, true).await {
            Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
            Err(e) => Err(e.into()),
        }
    }
}

impl PieceSource for &[u8] {
    /// A copy of the next `max` bytes (for tests and local callers).
    async fn next_piece(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        if self.is_empty() {
            return Ok(None);
        }
        let (piece, rest) = self.split_at(max.min(self.len()));
        *self = rest;
        Ok(Some(Bytes::copy_from_slice(piece)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A writer that takes at most `step` bytes per call, as a short write would.
    struct Short {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Short {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            assert!(bufs.len() <= IOV_MAX, "{} buffers in one writev", bufs.len());
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = (self.step - n).min(b.len());
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    proptest! {
        #[test]
        fn pieces_are_written_whole_and_in_order(
            sizes in proptest::collection::vec(0usize..3000, 0..2200),
            step in 1usize..100_000,
        ) {
            let pieces: Vec<Bytes> = sizes.iter().enumerate().map(|(i, n)| Bytes::from(vec![i as u8; *n])).collect();
            let mut w = Short { out: Vec::new(), step, calls: 0 };
            let written = write_pieces(&mut w, &pieces).unwrap();
            let want: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            prop_assert_eq!(written, want.len() as u64);
            prop_assert_eq!(w.out, want);
        }
    }

    #[test]
    fn empty_pieces_write_nothing_and_are_no_error() {
        let mut file = tempfile::tempfile().unwrap();
        assert_eq!(write_pieces(&mut file, &[Bytes::new()]).unwrap(), 0);
        let pieces = [
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"c"),
            Bytes::new(),
        ];
        assert_eq!(write_pieces(&mut file, &pieces).unwrap(), 3);
        assert_eq!(file.metadata().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_slice_gives_its_bytes_in_pieces_then_ends() {
        let data: Vec<u8> = (0..=255).collect();
        let mut src = &data[..];
        let mut got = Vec::new();
        while let Some(p) = src.next_piece(100).await.unwrap() {
            assert!(p.len() <= 100);
            got.extend_from_slice(&p);
        }
        assert_eq!(got, data);
    }
}
