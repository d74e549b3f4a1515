fn main() -> std::process::ExitCode {
    // One process-level TLS provider (ring) for every HTTPS client (reqwest, kube).
    meshcheck::targets::kind::tools::install_crypto_provider();
    std::process::ExitCode::from(meshcheck::cli::main())
}
