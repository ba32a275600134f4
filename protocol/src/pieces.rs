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

/// A file's bytes from a position on, read on a blocking thread up to
/// [`FilePieces::AHEAD`] pieces ahead of their sender, each piece read
/// straight into its own buffer (no second copy, as a buffered async file
/// makes) while the sender is busy with the one before.
#[derive(Debug)]
pub struct FilePieces {
    pieces: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    /// What is left of a piece larger than the last `max` asked for.
    rest: Option<Bytes>,
}

impl FilePieces {
    /// Pieces read ahead of the sender.
    pub const AHEAD: usize = 4;

    /// Reads `len` bytes of `file` from `start`, `piece` bytes at a time;
    /// the source ends early (`None`) if the file does. Needs a tokio
    /// runtime; the reading stops when the source is dropped.
    pub fn new(mut file: std::fs::File, start: u64, len: u64, piece: usize) -> Self {
        use std::io::{Read, Seek};
        let (tx, pieces) = tokio::sync::mpsc::channel(Self::AHEAD);
        let piece = piece.max(1);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(std::io::SeekFrom::Start(start)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut left = len;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(piece);
                // `read_to_end` fills the spare capacity without zeroing it first.
                let mut buf = Vec::with_capacity(want);
                match (&mut file).take(want as u64).read_to_end(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => left -= n as u64,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    break;
                }
            }
        });
        FilePieces { pieces, rest: None }
    }
}

impl PieceSource for FilePieces {
    async fn next_piece(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        let mut piece = match self.rest.take() {
            Some(rest) => rest,
            None => match self.pieces.recv().await {
                Some(read) => read?,
                None => return Ok(None),
            },
        };
        if piece.len() > max {
            self.rest = Some(piece.split_off(max));
        }
        Ok(Some(piece))
    }
}

/// An async reader as a [`PieceSource`]: each piece is read into a fresh
/// buffer that is not zeroed first.
#[derive(Debug)]
pub struct ReadPieces<R>(pub R);

impl<R: tokio::io::AsyncRead + Unpin + Send> PieceSource for ReadPieces<R> {
    async fn next_piece(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        use tokio::io::AsyncReadExt;
        let mut piece = bytes::BytesMut::with_capacity(max);
        while piece.len() < max {
            let room = (max - piece.len()) as u64;
            if (&mut self.0).take(room).read_buf(&mut piece).await? == 0 {
                break;
            }
        }
        Ok((!piece.is_empty()).then(|| piece.freeze()))
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

    /// Every byte `src` gives, asking for at most `max` at a time.
    async fn drain<S: PieceSource>(mut src: S, max: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(p) = src.next_piece(max).await.unwrap() {
            assert!(
                !p.is_empty() && p.len() <= max,
                "a piece of {} bytes for {max}",
                p.len()
            );
            got.extend_from_slice(&p);
        }
        got
    }

    #[tokio::test]
    async fn a_slice_gives_its_bytes_in_pieces_then_ends() {
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(drain(&data[..], 100).await, data);
    }

    #[tokio::test]
    async fn a_reader_gives_its_bytes_in_pieces_then_ends() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(drain(ReadPieces(&data[..]), 64).await, data);
    }

    proptest! {
        #[test]
        fn a_file_gives_the_range_asked_for_and_ends_with_the_file(
            size in 0usize..5000,
            start in 0u64..5200,
            len in 0u64..6000,
            piece in 1usize..700,
            max in 1usize..900,
        ) {
            let data: Vec<u8> = (0..size as u32).map(|i| (i % 253) as u8).collect();
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &data).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(async { drain(FilePieces::new(file, start, len, piece), max).await });
            let from = (start as usize).min(size);
            let to = (start + len).min(size as u64) as usize;
            prop_assert_eq!(got, &data[from..to]);
        }
    }
}
