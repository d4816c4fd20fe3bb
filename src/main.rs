fn main() {
    eprintln!("shardius: the server arrives with the next milestone; see README.md");
    std::process::exit(2);
}
