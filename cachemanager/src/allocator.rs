//! Keeps the C allocator's idle memory small. With glibc's defaults a
//! cache manager at 100,000 files held about 40 MiB more than it used:
//! every FUSE and fetch thread grew its own arena, and the index save's
//! buffer (tens of MiB) raised the mmap threshold so later large buffers
//! stayed in the heaps after being freed (measured in docs/PERFORMANCE.md).

/// Most malloc arenas: one per core on the machines we target is enough
/// for a handful of FUSE threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;
/// Allocations at least this large get their own mapping, returned to the
/// system when freed (a fixed threshold also stops glibc raising it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Sets the allocator's limits; call once at start, before other threads.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
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
