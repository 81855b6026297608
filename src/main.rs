// mimalloc instead of glibc's malloc: a batch allocates and frees a few small buffers per
// request (headers, bodies, futures), and at 200,000 ids with no latency glibc's malloc and
// free were ~11 % of the client's CPU. mimalloc cut the run's wall time by 6–12 %
// (docs/PERFORMANCE.md). `no_thp` keeps it off transparent huge pages: with them, peak RSS
// went from 16 to 43 MB, each 2 MiB page counted whole.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    userfetch::commands::main(userfetch::cli::Cli::parse_checked()).into()
}
