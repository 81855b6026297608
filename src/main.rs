fn main() -> std::process::ExitCode {
    userfetch::app::main(userfetch::cli::Cli::parse_checked()).into()
}
