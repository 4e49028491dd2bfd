fn main() {
    let code = couchsim::binary::main_with_args(std::env::args().collect());
    std::process::exit(code);
}
