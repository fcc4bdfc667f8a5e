//! `bench`: runs every workload under every allocator and writes the reports.
fn main() -> std::process::ExitCode {
    domalloc_bench_suite::runner::main()
}
