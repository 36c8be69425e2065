fn main() -> std::process::ExitCode {
    return_large_buffers_to_the_system();
    swarm_upgrade::cli::main()
}

/// Buffers of 128 kB and more (a fleet's task and network answers, megabytes each) are mapped
/// on their own and handed back to the system when freed. glibc's default raises that threshold
/// after the first such buffer is freed, and later ones then stay in the process's heap: at
/// 1,000 nodes, 10 MB of the operator's 59 MB at rest (`BENCHMARKS.md`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers_to_the_system() {
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers_to_the_system() {}
