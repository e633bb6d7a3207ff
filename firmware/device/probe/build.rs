//! Puts memory.x where the linker finds it; renders the installed form of the probe's test
//! image (the format document's test vector) and a formatted state log, for the probe to boot.
include!("src/layout.rs");

fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    let vector = std::fs::read("src/vector.fwi").unwrap();
    let installed = firmware::image::installed_form(&vector, 0x1_0000, 0xFF).unwrap();
    std::fs::write(out.join("vector.installed"), installed).unwrap();
    // A state log as the device's first boot leaves it.
    let layout = probe_layout();
    let mut flash = firmware::sim::SimFlash::new(&layout);
    firmware::state::StateLog::open(&mut flash, &layout).unwrap();
    let state = flash.read_vec(STATE_OFFSET, STATE_SIZE);
    std::fs::write(out.join("state.bin"), state).unwrap();
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=src/vector.fwi");
    println!("cargo:rerun-if-changed=src/layout.rs");
}
