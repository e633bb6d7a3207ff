//! Prints the test vector of `docs/delta.md`: the patch from the image format's test vector
//! (`docs/image-format.md`, v1.0.0) to a v1.0.1 whose os has a new reset vector and whose app
//! has one instruction changed, signed with the same test key, cut in 1 KiB segments.
//! `firmware/tests/delta_vector.rs` checks the document against this very construction.
//!
//! Run: `cargo run -p firmware --features std --example delta-vector`

#[path = "test-vector.rs"]
#[allow(dead_code)]
pub mod image_vector;

use firmware::delta::{EncodedPatch, PatchOptions, create_patch};
use firmware::image::{ComponentSource, EncodedImage, ImageSpec, encode_image};

/// Slot A of the micro:bit, where both images install.
pub const SLOT_START: u32 = 0x1_0000;

/// The target's os: the source's, with the reset vector moved 16 bytes on.
pub fn os_bytes() -> Vec<u8> {
    let mut os = image_vector::os_bytes();
    os[4..8].copy_from_slice(&0x0001_0451u32.to_le_bytes());
    os
}

/// The target's app: the source's, with `movs r0, #0` made `movs r0, #1`.
pub fn app_bytes() -> Vec<u8> {
    let mut app = image_vector::app_bytes();
    app[6] = 0x01;
    app
}

/// The source image, the target image, and the patch between them.
pub fn build() -> (EncodedImage, EncodedImage, EncodedPatch) {
    let (key, source) = image_vector::build();
    let (_, spec) = image_vector::spec();
    let mut components = spec.components.clone();
    components[0] = ComponentSource { bytes: os_bytes(), ..components[0].clone() };
    components[1] = ComponentSource { bytes: app_bytes(), ..components[1].clone() };
    let spec = ImageSpec { version: "1.0.1".parse().unwrap(), components, ..spec };
    let target = encode_image(&spec, std::slice::from_ref(&key)).expect("the target builds");
    let options = PatchOptions { block_shift: 10 };
    let patch = create_patch(&source.bytes, &target.bytes, SLOT_START, 0xFF, &options)
        .expect("the patch builds");
    (source, target, patch)
}

#[allow(dead_code)] // `tests/delta_vector.rs` includes this file for `build`, not for `main`.
fn main() {
    let (source, target, patch) = build();
    println!("source      {}", source.id);
    println!("target      {}", target.id);
    println!("os          0x00010400 {}", hex::encode(os_bytes()));
    println!("app         0x00018000 {}", hex::encode(app_bytes()));
    println!("header      {}", patch.header_len);
    println!("body        {}", patch.prefix.body_len);
    println!("length      {}", patch.bytes.len());
    println!();
    for line in patch.bytes.chunks(32) {
        println!("{}", hex::encode(line));
    }
}
