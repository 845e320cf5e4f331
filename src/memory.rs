//! Memory hygiene: hands memory the process has freed back to the operating system.

/// Returns the free memory of the allocator's heaps to the operating system.
///
/// glibc's allocator keeps memory freed by small allocations in its heaps for reuse, and with
/// the many small entries of a large state (tree nodes, monitors, incidents) little of it is ever
/// at the top of a heap where it could be given back. After a rare, large, short-lived state (a
/// time-travel answer, a replay, loading the checkpoint at start) the process would otherwise keep
/// its peak size for good. `malloc_trim` releases every whole free page, wherever it is.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists; it takes no pointers and
    // may be called at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
