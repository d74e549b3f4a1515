fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(meshcheck::cli::main())
}
