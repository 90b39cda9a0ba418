//! How many workers this host can hold: `[worker] capacity = "auto"` resolved from the host's
//! memory and the measured cost of one tenant.
//!
//! Owns the per-tenant memory costs (the one place they are written), the room left for the
//! system, reading `MemTotal` from `/proc/meminfo` and the arithmetic. The planner only sees
//! the resulting number (`reconcile::Policy::capacity`); the daemon resolves it once at start.

use std::io;

/// Proportional memory (PSS) of one idle, linked tenant: the worker and its browser on the
/// WhatsApp Web page, measured with the lean flags (docs/worker-memory.md, docs/benchmarks.md).
/// A tenant's cost is almost all browser, so the browser decides it.
///
/// The figures are one tenant alone on the fake page (313 MiB with Chromium, 184 to 201 MiB
/// with the headless shell), rounded up: tenants on one host share pages, so thirty cost far
/// less each (62 MiB with the shell), but the real WhatsApp Web adds an account's own heap, which
/// is not shared. Set `[worker] capacity` to a number once real accounts were measured.
///
/// Chromium (`/usr/bin/chromium`, the new headless mode).
pub const CHROMIUM_TENANT_BYTES: u64 = 320 << 20;
/// Debian's `chromium-headless-shell` (the old headless mode, a much smaller browser).
pub const HEADLESS_SHELL_TENANT_BYTES: u64 = 200 << 20;

/// One tenant's cost with Debian's headless shell (`true`) or with Chromium (`false`).
pub fn tenant_bytes(headless_shell: bool) -> u64 {
    if headless_shell {
        HEADLESS_SHELL_TENANT_BYTES
    } else {
        CHROMIUM_TENANT_BYTES
    }
}

/// Memory always left to the system (kernel, page cache, the daemon, sshd, a local database):
/// a tenth of `MemTotal`, and at least this much.
pub const SYSTEM_RESERVE_MIN_BYTES: u64 = 1 << 30;

/// The memory left for the system on a host with `mem_total` bytes.
pub fn system_reserve(mem_total: u64) -> u64 {
    (mem_total / 10).max(SYSTEM_RESERVE_MIN_BYTES)
}

/// The workers a host with `mem_total` bytes holds when each tenant costs `per_tenant` bytes:
/// what is left after the system's reserve, divided by the cost, and at least one (a host too
/// small for one worker still runs one, as it would without a limit).
pub fn auto_capacity(mem_total: u64, per_tenant: u64) -> u32 {
    let usable = mem_total.saturating_sub(system_reserve(mem_total));
    let n = usable
        .checked_div(per_tenant)
        .unwrap_or(u64::from(u32::MAX));
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

/// `MemTotal` of this host in bytes, from `/proc/meminfo`.
pub fn mem_total() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    parse_mem_total(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/meminfo has no readable MemTotal line",
        )
    })
}

/// The `MemTotal:  24683772 kB` line of a `/proc/meminfo` text, in bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:       24683772 kB\nMemFree:         9083556 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_683_772 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: x kB\n"), None);
    }

    #[test]
    fn auto_capacity_leaves_room_for_the_system() {
        let cases = [
            // A 24 GiB host: 2.4 GiB for the system, the rest in tenants.
            (24 * GIB, CHROMIUM_TENANT_BYTES, 69),
            (24 * GIB, HEADLESS_SHELL_TENANT_BYTES, 110),
            // Small hosts keep at least 1 GiB for the system.
            (4 * GIB, CHROMIUM_TENANT_BYTES, 9),
            (2 * GIB, HEADLESS_SHELL_TENANT_BYTES, 5),
            // Too small for one tenant: one anyway.
            (GIB, CHROMIUM_TENANT_BYTES, 1),
            (0, CHROMIUM_TENANT_BYTES, 1),
        ];
        for (mem, cost, want) in cases {
            assert_eq!(auto_capacity(mem, cost), want, "{mem} bytes at {cost} each");
        }
    }

    #[test]
    fn this_host_has_a_mem_total() {
        assert!(mem_total().unwrap() > 0);
    }
}
