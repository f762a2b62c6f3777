use clap::Parser;

fn main() {
    let cli = reshard::cli::Cli::parse();
    std::process::exit(reshard::cli::dispatch(cli));
}
