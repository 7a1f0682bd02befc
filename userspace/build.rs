//! Builds the XDP objects and hands their paths to the crate (`VEER_XDP_OBJ`,
//! `VEER_BASELINE_OBJ`), so the binaries embed the dataplane they were built with.
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    for p in veer_ebpf_build::sources(root) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    match veer_ebpf_build::build(root) {
        Ok(objs) => {
            println!("cargo:rustc-env=VEER_XDP_OBJ={}", objs.xdp.display());
            println!("cargo:rustc-env=VEER_BASELINE_OBJ={}", objs.baseline.display());
            println!("cargo:rustc-env=VEER_AGENT_OBJ={}", objs.agent.display());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
