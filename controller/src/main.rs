fn main() -> std::process::ExitCode {
    swarm_upgrade::cli::main()
}
