use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = swarm_sim::cli::SimCli::parse();
    if let Err(e) = swarm_sim::cli::run(cli).await {
        eprintln!("swarm-sim: {e:#}");
        std::process::exit(1);
    }
}
