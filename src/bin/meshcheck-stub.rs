//! The stub backend as its own small binary (the container image of the cluster targets).
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    meshcheck::stub::main_with_args(&args)
}
