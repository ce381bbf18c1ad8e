//! Resident memory of this process, read from Linux's `/proc/self/status`, for `zoo bench`; and how the
//! allocator keeps freed memory between forward passes.
//!
//! The peak of one forward pass is isolated by resetting the kernel's high-water mark first (writing 5
//! to `/proc/self/clear_refs`), so it does not include the load. Elsewhere every reading is `None`.

/// glibc hands a freed block above its mmap threshold (128 KiB, adapting up to 32 MiB) straight back to the
/// kernel and trims the heap's free top, so each layer's output of every forward pass arrives in fresh
/// pages that the kernel faults in and zeroes: int8 ResNet-50 at batch 8 took 4x the page faults and ~7 %
/// more CPU time (`benches/README.md`). Blocks up to 32 MiB now come from the heap and memory freed during
/// a pass stays for the next (the resident size settles at the largest pass's peak, still flat in the
/// number of inputs); what loading leaves behind is returned by [`release_freed`]. Other allocators than
/// glibc's are left alone.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Returns the heap's free memory to the kernel (after loading a model: the checkpoint's buffers and
/// scratch), since [`keep_freed_memory`] no longer does it on its own.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resident set size now and its high-water mark since the last reset, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Resident {
    pub now: u64,
    pub peak: u64,
}

/// Resets the high-water mark to the current resident size; false where the kernel does not allow it.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub fn resident() -> Option<Resident> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    };
    Some(Resident {
        now: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}
