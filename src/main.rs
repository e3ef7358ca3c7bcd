fn main() -> std::process::ExitCode {
    ozform::cli::main()
}
