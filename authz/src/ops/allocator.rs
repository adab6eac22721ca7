//! The C library's allocator and HSM recycles (docs/HSM.md, "Recycling").
//!
//! A recycle's `C_Finalize` frees every session object SoftHSM made since the last one. glibc
//! keeps small freed chunks in its "fastbins", unmerged, until the next larger allocation in the
//! arena that made them; that arena is a pool worker's, and its next larger allocation is its
//! first key copy after the reconnect, which then merges them all (`malloc_consolidate`). Under
//! load at 200,000 objects that took 58 to 123 ms before the first worker served again (perf:
//! 98 % of the workers' samples in that window were `malloc_consolidate` and `unlink_chunk`).
//! With fastbins off (`GLIBC_TUNABLES=glibc.malloc.mxfast=0`, read by the C library when the
//! process starts), a chunk is merged as it is freed, within `C_Finalize`'s own time, which did
//! not grow, and the workers attached in 0 to 2 ms. Only the environment can set it, so authz
//! says at start when it is missing.

/// The `GLIBC_TUNABLES` entry that turns glibc's fastbins off.
pub const FASTBINS_OFF: &str = "glibc.malloc.mxfast=0";

/// Whether a `GLIBC_TUNABLES` value turns the fastbins off: its last `glibc.malloc.mxfast`
/// entry (entries are `name=value`, separated by colons) is 0.
pub fn fastbins_off(tunables: Option<&str>) -> bool {
    let Some(tunables) = tunables else {
        return false;
    };
    tunables
        .split(':')
        .filter_map(|entry| entry.split_once('='))
        .rfind(|(name, _)| *name == "glibc.malloc.mxfast")
        .is_some_and(|(_, value)| value == "0")
}

/// Whether authz should warn at start: the HSM pool recycles, the C library is glibc, and
/// `tunables` (the process's `GLIBC_TUNABLES`) leaves the fastbins on.
pub fn should_warn(recycle_after_objects: u64, tunables: Option<&str>) -> bool {
    cfg!(target_env = "gnu") && recycle_after_objects > 0 && !fastbins_off(tunables)
}

/// Logs the advice once, at start, when [`should_warn`] says so.
pub fn check_at_start(recycle_after_objects: u64) {
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    if should_warn(recycle_after_objects, tunables.as_deref()) {
        tracing::warn!(
            "glibc's fastbins are on, so each HSM recycle keeps the HSM out about 60 to 120 ms longer \
             (docs/HSM.md, Recycling): start authz with GLIBC_TUNABLES={FASTBINS_OFF}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_last_mxfast_of_zero_turns_the_fastbins_off() {
        assert!(fastbins_off(Some("glibc.malloc.mxfast=0")));
        assert!(fastbins_off(Some("glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0")));
        assert!(fastbins_off(Some("glibc.malloc.mxfast=64:glibc.malloc.mxfast=0")));
        assert!(!fastbins_off(None));
        assert!(!fastbins_off(Some("")));
        assert!(!fastbins_off(Some("glibc.malloc.mxfast=64")));
        assert!(!fastbins_off(Some("glibc.malloc.mxfast=0:glibc.malloc.mxfast=64")));
        assert!(!fastbins_off(Some("glibc.malloc.mxfast=00x")));
        assert!(!fastbins_off(Some("xglibc.malloc.mxfast=0")));
    }

    #[test]
    fn the_warning_is_for_a_recycling_pool_with_fastbins_on() {
        assert_eq!(should_warn(200_000, None), cfg!(target_env = "gnu"));
        assert!(!should_warn(0, None), "no recycles, nothing to gain");
        assert!(!should_warn(200_000, Some(FASTBINS_OFF)));
    }
}
