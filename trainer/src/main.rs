//! `trainer`: the command-line entry point for MaxxViT-family models. The command line and its
//! dispatch are the library's `trainer::cli`.

use clap::Parser;

fn main() {
    keep_freed_memory_mapped();
    if let Err(err) = trainer::cli::run(trainer::cli::Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// glibc hands every freed block over 128 KiB (a decoded image, an activation) back to the OS
/// and page-faults it in again on the next allocation: ~5 % of the input pipeline's time and
/// more of a CPU train step (BENCH.md). Keep blocks up to 32 MiB in the heap, unless the user set
/// glibc's own environment knobs.
fn keep_freed_memory_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
