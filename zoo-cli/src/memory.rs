//! Resident memory of this process, read from Linux's `/proc/self/status`, for `zoo bench`.
//!
//! The peak of one forward pass is isolated by resetting the kernel's high-water mark first (writing 5
//! to `/proc/self/clear_refs`), so it does not include the load. Elsewhere every reading is `None`.

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
