use clap::Parser;

fn main() -> std::process::ExitCode {
    userfetch::app::main(userfetch::cli::Cli::parse()).into()
}
