//! `veer-launch SOCKET PROGRAM [ARG...]`: runs a command through the test
//! process's launcher (see `veer_tests::launcher`), for hooks, which hold no
//! privilege to enter a backend's namespace. Exits with the command's status.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((socket, argv)) = args.split_first() else {
        eprintln!("usage: veer-launch SOCKET PROGRAM [ARG...]");
        return ExitCode::from(125);
    };
    match veer_tests::launcher::request(std::path::Path::new(socket), argv) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("veer-launch: {e:#}");
            ExitCode::from(125)
        }
    }
}
