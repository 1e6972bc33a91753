//! Writes the tiny guest: `cargo run -p tinyguest --example write -- OUT [pvh]`.
fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().expect("usage: write OUT [pvh]");
    let pvh = args.next().as_deref() == Some("pvh");
    std::fs::write(out, tinyguest::elf(tinyguest::DEFAULT_MESSAGE, pvh)).expect("write");
}
