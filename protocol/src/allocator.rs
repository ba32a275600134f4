//! Keeps the C allocator's idle memory small and its churn cheap. With
//! glibc's defaults a cache manager at 100,000 files held about 40 MiB
//! more than it used: every FUSE and fetch thread grew its own arena, and
//! the index save's buffer (tens of MiB) raised the mmap threshold so later
//! large buffers stayed in the heaps after being freed. And a transfer's
//! churn of packet-sized and chunk-sized buffers gave pages back at every
//! free and faulted them in again, zeroed (measured in docs/PERFORMANCE.md).

/// Allocator limits for one daemon.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most malloc arenas (glibc makes one per thread up to 8 per core).
    pub arenas: i32,
    /// Allocations at least this large get their own mapping, returned to
    /// the system when freed (a fixed threshold also stops glibc raising it).
    pub mmap_threshold: i32,
    /// Free memory a heap keeps at its top instead of returning it at once.
    pub trim_threshold: i32,
}

/// The cache manager's: two arenas are enough for a handful of FUSE
/// threads; buffers of 1 MiB and more (the index save's) go back at once;
/// up to 8 MiB of free heap is kept for the packets of a transfer.
pub const CACHE_MANAGER: Limits = Limits {
    arenas: 2,
    mmap_threshold: 1 << 20,
    trim_threshold: 8 << 20,
};

/// The fileserver's: its 1 MiB file chunks come from the heaps (a mapping
/// each was faulted in page by page), and up to 16 MiB of free heap is kept
/// for the chunks a transfer has in flight.
pub const FILESERVER: Limits = Limits {
    arenas: 4,
    mmap_threshold: 4 << 20,
    trim_threshold: 16 << 20,
};

/// Sets the allocator's limits; call once at start, before other threads.
pub fn tune(limits: Limits) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, limits.arenas);
        libc::mallopt(libc::M_MMAP_THRESHOLD, limits.mmap_threshold);
        libc::mallopt(libc::M_TRIM_THRESHOLD, limits.trim_threshold);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = limits;
}

/// Returns the allocator's free pages to the system (after a burst such as
/// an index save).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
