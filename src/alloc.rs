//! The binary's memory allocator settings.

/// Caps glibc's malloc at one arena per core (at least 2), unless `MALLOC_ARENA_MAX` is set
/// in the environment (glibc has then applied it already). Must run before any thread
/// starts: an arena, once made, stays.
///
/// Why: glibc gives each thread that allocates while another holds its arena an arena of
/// its own, up to 8 per core, and keeps what is freed in each. sled and the session tier
/// free and allocate all the time across threads, so at 100,000 sessions (`scripts/memory`)
/// arenas took most of the node's memory. The cap made the Docker image's
/// `MALLOC_ARENA_MAX=2` every run's setting. mimalloc and jemalloc, measured on the same
/// loads, held more, not less (README, "Memory and disk under many sessions").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn cap_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a tunable of glibc's allocator; it is called before this
    // process starts a thread, and a refused value (it returns 0) leaves glibc's default.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

/// Nothing to cap: only glibc's malloc makes an arena per thread.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn cap_malloc_arenas() {}
