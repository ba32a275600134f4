//! Writing large files without keeping them in the page cache.
//!
//! A file written a chunk at a time has each chunk's writeback started at
//! once, and, when it is large, each chunk [`DROP_BEHIND_LAG`] behind the
//! newest waited for on disk and dropped from the page cache. The writer
//! then reuses a few MiB of pages instead of filling a fresh page for every
//! 4 KiB: on a VM whose host takes back free memory, filling a page it took
//! back costs about 10 µs (seconds a GiB), and a gigabyte kept would push
//! out the small files a web node or a fileserver serves all day. Used by
//! the fileserver for large stores and by the cache manager for the copies
//! of large files it fetches.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Files at least this large are dropped from the page cache as they are
/// written.
pub const DROP_BEHIND_FROM: u64 = 64 << 20;

/// How far behind the newest chunk a large file's chunks are waited for on
/// disk and dropped: the disk works on the chunks between.
pub const DROP_BEHIND_LAG: u64 = 8 << 20;

/// After `len` bytes were written at `at` of `file`: starts writing them to
/// disk without waiting and, when `drop_behind`, waits for the `len` bytes
/// [`DROP_BEHIND_LAG`] before them to be on disk and drops those from the
/// page cache.
///
/// Starting the writeback lets a later fsync wait only for the last pieces.
/// A write error is returned when it is waited for here: waiting consumes
/// it for this descriptor, so a later fsync would no longer see it.
pub fn wrote(file: &File, at: u64, len: usize, drop_behind: bool) -> std::io::Result<()> {
    // Only a hint: a failure shows at the fsync or the wait.
    let _ = sync_range(file, at, len, libc::SYNC_FILE_RANGE_WRITE);
    match at.checked_sub(DROP_BEHIND_LAG) {
        Some(old) if drop_behind => drop_written(file, old, len),
        _ => Ok(()),
    }
}

/// `at` and `len` as the kernel's file offsets, if they fit.
fn file_range(at: u64, len: usize) -> Option<(i64, i64)> {
    Some((i64::try_from(at).ok()?, i64::try_from(len).ok()?))
}

/// `sync_file_range(2)` of `len` bytes at `at` of `file` with `flags`.
fn sync_range(file: &File, at: u64, len: usize, flags: libc::c_uint) -> std::io::Result<()> {
    let Some((at, len)) = file_range(at, len) else {
        return Ok(());
    };
    // SAFETY: the descriptor is open for the call's duration (borrowed
    // from `file`); the call reads no memory of ours.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), at, len, flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for `len` bytes at `at` of `file` to be on disk and drops them
/// from the page cache.
fn drop_written(file: &File, at: u64, len: usize) -> std::io::Result<()> {
    let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    sync_range(file, at, len, wait)?;
    let Some((at, len)) = file_range(at, len) else {
        return Ok(());
    };
    // SAFETY: the descriptor is open for the call's duration (borrowed
    // from `file`); the call reads no memory of ours. Only a hint: pages it
    // cannot drop stay cached.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), at, len, libc::POSIX_FADV_DONTNEED) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Pages of `file` in the page cache (`mincore` of a mapping).
    fn cached_pages(file: &File, len: usize) -> usize {
        let page = 4096;
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open
        // file; unmapped below, never read through.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: `map` is the mapping above; `vec` has one byte per page.
        assert_eq!(unsafe { libc::mincore(map, len, vec.as_mut_ptr()) }, 0);
        // SAFETY: the mapping above, not used after.
        unsafe { libc::munmap(map, len) };
        vec.iter().filter(|b| *b & 1 == 1).count()
    }

    #[test]
    fn chunks_far_enough_behind_leave_the_page_cache_and_the_bytes_stay() {
        // Beside the test binary: on the build's disk (a tmpfs /tmp keeps
        // every page).
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let path = dir.path().join("big");
        let mut file = File::create(&path).unwrap();
        let chunk = 1 << 20;
        let chunks = (DROP_BEHIND_LAG as usize / chunk) + 4;
        for i in 0..chunks {
            file.write_all(&vec![i as u8; chunk]).unwrap();
            wrote(&file, (i * chunk) as u64, chunk, true).unwrap();
        }
        let len = chunks * chunk;
        let cached = cached_pages(&File::open(&path).unwrap(), len);
        // The first four chunks were dropped; the last LAG's worth may stay.
        assert!(
            cached <= DROP_BEHIND_LAG as usize / 4096,
            "{cached} pages of {} still cached",
            len / 4096
        );
        let back = std::fs::read(&path).unwrap();
        assert!(
            back.chunks(chunk)
                .enumerate()
                .all(|(i, c)| c.iter().all(|b| *b == i as u8))
        );
    }
}
