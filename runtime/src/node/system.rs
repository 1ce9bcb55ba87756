//! What this machine has: CPU count, memory, GPU ids. Read once at node start; every value can
//! be overridden by configuration (and tests use fake GPU ids).

/// Logical CPUs available to this process.
pub fn cpu_count() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

/// Total memory in MiB, from `/proc/meminfo` (0 if unreadable).
pub fn mem_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// Parses a `CUDA_VISIBLE_DEVICES` value into GPU ids; entries that are not numbers (UUIDs, MIG
/// ids) are reported in the error.
pub fn parse_visible_devices(value: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<i64>() {
            // CUDA stops at the first negative id.
            Ok(n) if n < 0 => break,
            Ok(n) => ids.push(n as u32),
            Err(_) => {
                return Err(format!(
                    "CUDA_VISIBLE_DEVICES entry {part:?} is not a GPU index; give the node its GPU ids explicitly"
                ))
            }
        }
    }
    Ok(ids)
}

/// The GPU ids this process may use: `CUDA_VISIBLE_DEVICES` if set, else the NVIDIA driver's
/// GPU list under `/proc/driver/nvidia/gpus`, else none.
pub fn detect_gpus() -> Vec<u32> {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        match parse_visible_devices(&v) {
            Ok(ids) => return ids,
            Err(e) => {
                tracing::warn!("{e}; assuming no GPUs");
                return Vec::new();
            }
        }
    }
    match std::fs::read_dir("/proc/driver/nvidia/gpus") {
        Ok(entries) => (0..entries.count() as u32).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_devices_parse_like_cuda() {
        assert_eq!(parse_visible_devices("0,1, 3").unwrap(), vec![0, 1, 3]);
        assert_eq!(parse_visible_devices("2,-1,3").unwrap(), vec![2]);
        assert_eq!(parse_visible_devices("").unwrap(), Vec::<u32>::new());
        assert!(parse_visible_devices("GPU-abc").is_err());
    }
}
