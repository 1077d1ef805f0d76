//! The `floe` command line.

mod cli;

// floe allocates many small objects per write (keys, events, acks); mimalloc
// halves what glibc's malloc costs there (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
