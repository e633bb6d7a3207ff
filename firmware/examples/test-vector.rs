//! Prints the test vector of `docs/image-format.md`: a small image built from fixed inputs and
//! a fixed (public, test-only) key. `firmware/tests/test_vector.rs` checks the document against
//! this very construction, so the document cannot drift from the code.
//!
//! Run: `cargo run -p firmware --features std --example test-vector`

use ed25519_dalek::SigningKey;
use firmware::image::{
    ComponentSource, EncodedImage, HeatshrinkParams, ImageSpec, KeyId, Role, SlotLayout,
    encode_image,
};

/// The test key's seed: bytes 0x00, 0x01, ... 0x1f. Never use it for anything real.
pub const SEED: [u8; 32] = {
    let mut seed = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        seed[i] = i as u8;
        i += 1;
    }
    seed
};

/// The os: the start of a Cortex-M0 vector table (stack top, reset, then handlers).
pub fn os_bytes() -> Vec<u8> {
    let words: [u32; 16] = [
        0x2000_4000,
        0x0001_0441,
        0x0001_043f,
        0x0001_043f,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0x0001_043f,
        0x0001_043f,
        0,
        0x0001_043f,
        0x0001_043f,
    ];
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The app: an "APP1" magic word and a few Thumb instructions.
pub fn app_bytes() -> Vec<u8> {
    vec![
        0x31, 0x50, 0x50, 0x41, 0x10, 0xb5, 0x00, 0x20, 0x10, 0xbd, 0x70, 0x47, 0xfe, 0xe7, 0x00,
        0xbf,
    ]
}

/// Builds the test vector image and returns it with the test key.
pub fn build() -> (SigningKey, EncodedImage) {
    let (key, spec) = spec();
    let image = encode_image(&spec, std::slice::from_ref(&key)).expect("the test vector builds");
    (key, image)
}

/// The test key and what the test vector is built from.
pub fn spec() -> (SigningKey, ImageSpec) {
    let key = SigningKey::from_bytes(&SEED);
    let spec = ImageSpec {
        board: "microbit".into(),
        version: "1.0.0".parse().unwrap(),
        security_counter: 1,
        compression: Some(HeatshrinkParams::DEFAULT),
        components: vec![
            ComponentSource {
                role: Role::Os,
                name: "os".into(),
                load_address: 0x1_0400,
                bytes: os_bytes(),
            },
            ComponentSource {
                role: Role::App,
                name: "app".into(),
                load_address: 0x1_8000,
                bytes: app_bytes(),
            },
        ],
        slot: Some(SlotLayout { start: 0x1_0000, size: 0x1_7000, header_size: 0x400 }),
    };
    (key, spec)
}

#[allow(dead_code)] // `tests/test_vector.rs` includes this file for `build`, not for `main`.
fn main() {
    let (key, image) = build();
    let public = key.verifying_key().to_bytes();
    println!("seed        {}", hex::encode(SEED));
    println!("public_key  {}", hex::encode(public));
    println!("key_id      {}", KeyId::of_public_key(&public));
    println!("os          0x00010400 {}", hex::encode(os_bytes()));
    println!("app         0x00018000 {}", hex::encode(app_bytes()));
    println!("id          {}", image.id);
    println!("length      {}", image.bytes.len());
    println!();
    for line in image.bytes.chunks(32) {
        println!("{}", hex::encode(line));
    }
}
